"""Exact removal at once: serve the stored checkpoint before the first slice that held an erased
subject (no training), then restore the later slices in the background.

A fine-tune kept in several slice orders (S3T) switches to the order where the subject's
records were trained latest, so the most slices stay on; every order is switched off (its
checkpoints that saw the subject are destroyed) and every order is restored.

``switch_exact`` and ``restore_exact`` run with no transaction open; ``publish.publish_exact``
publishes either as the next version and ``publish.finish_exact`` / ``publish.certify_restored``
issue their certificates (the restored one supersedes the switched-off one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from models.finetune import (
    SERVING_META,
    FinetuneConfig,
    FinetuneResult,
    SwitchOff,
    ensure_initial_checkpoint,
    export_merged,
    initial_checkpoint_id,
    switch_off_orders,
    train_sliced,
)
from service.core.config import Settings
from service.core.storage import artifact_store, merged_root
from service.erasure.retrain_outcomes import (
    ExactnessResult,
    FinetuneExactness,
    FinetuneRetrainOutcome,
    OrderOutcome,
)
from service.finetune.retrain import ExactInputs
from service.finetune.training import slices_progress


def _export(
    settings: Settings, inputs: ExactInputs, config: FinetuneConfig, checkpoint: str
) -> str:
    """Merge ``checkpoint`` (of the order trained under ``config``) into serving weights
    (once); returns their sha256."""
    served = inputs.served
    folder = export_merged(
        served.base_dir,
        config,
        checkpoint,
        artifact_store(settings),
        merged_root(settings),
        base_id=served.base_id,
    )
    return str(json.loads((folder / SERVING_META).read_text())["weights_sha256"])


def _superseded(offs: Sequence[SwitchOff]) -> tuple[str, ...]:
    """Every order's checkpoints that saw an erased subject, each once."""
    return tuple(dict.fromkeys(c for off in offs for c in off.superseded_checkpoints))


def _switched_orders(offs: Sequence[SwitchOff]) -> tuple[OrderOutcome, ...]:
    if len(offs) == 1:
        return ()  # one order: the outcome's own fields say it all
    return tuple(
        OrderOutcome(
            order=index,
            first_affected_slice=off.first_affected_slice,
            slices_kept=len(off.checkpoints_served),
            slices_retrained=0,
            checkpoint_after=off.checkpoint_served,
            checkpoint_ids=tuple(off.checkpoints_served),
        )
        for index, off in enumerate(offs)
    )


def switch_exact(settings: Settings, inputs: ExactInputs) -> FinetuneRetrainOutcome:
    """The checkpoint that serves the fine-tune without the subjects, merged for serving: of
    the slice order that keeps the most slices (S3T), when the fine-tune keeps several."""
    started = time.perf_counter()
    served = inputs.served
    orders = served.orders
    chosen, offs = switch_off_orders(
        [o.config for o in orders],
        inputs.records,
        inputs.erase_subjects,
        [o.final for o in orders],
        served.base_id,
    )
    off, config = offs[chosen], orders[chosen].config
    if off.checkpoint_served == initial_checkpoint_id(served.base_id, config):
        store = artifact_store(settings)
        ensure_initial_checkpoint(served.base_dir, config, store, served.base_id)
    weights = _export(settings, inputs, config, off.checkpoint_served)
    return FinetuneRetrainOutcome(
        version_before=served.number,
        first_affected_slice=off.first_affected_slice,
        slices_retrained=0,
        slices_total=config.slices,
        records_erased=off.erased_records,
        checkpoint_before=off.checkpoint_before,
        checkpoint_after=off.checkpoint_served,
        superseded_checkpoints=_superseded(offs),
        lineage_hash=off.retained_prefix_hash,
        retrain_seconds=0.0,
        export_seconds=round(time.perf_counter() - started, 4),
        exactness=FinetuneExactness(ExactnessResult.not_run),
        checkpoint_ids=tuple(off.checkpoints_served),
        retained_keys=tuple(off.retained_prefix_keys),
        stage="switched_off",
        served_weights_sha256=weights,
        retained_prefix_sha256=off.retained_prefix_hash,
        orders=_switched_orders(offs),
        served_order=chosen if len(offs) > 1 else 0,
    )


def _restored_orders(
    switched: FinetuneRetrainOutcome, trainings: Sequence[FinetuneResult]
) -> tuple[OrderOutcome, ...]:
    if len(trainings) == 1:
        return ()
    firsts = {o.order: o.first_affected_slice for o in switched.orders}
    return tuple(
        OrderOutcome(
            order=index,
            first_affected_slice=firsts.get(index, training.resumed_from_slice),
            slices_kept=len(training.checkpoint_ids),
            slices_retrained=training.slices_trained,
            checkpoint_after=training.final_checkpoint,
            checkpoint_ids=tuple(training.checkpoint_ids),
        )
        for index, training in enumerate(trainings)
    )


def restore_exact(
    settings: Settings,
    inputs: ExactInputs,
    switched: FinetuneRetrainOutcome,
    progress: Callable[[float], None],
) -> FinetuneRetrainOutcome:
    """Retrain every slice order's switched-off slices on the retained records (each resuming
    from its own last stored checkpoint) and merge the first order for serving."""
    served = inputs.served
    orders = served.orders
    erased = set(inputs.erase_subjects)
    retained = [r for r in inputs.records if r.subject not in erased]
    store = artifact_store(settings)
    trainings = [
        train_sliced(
            served.base_dir,
            order.config,
            retained,
            store,
            base_id=served.base_id,
            progress=slices_progress(progress, index, len(orders)),
        )
        for index, order in enumerate(orders)
    ]
    # The from-scratch check is a whole fine-tune per order: its own job (service.finetune.verify).
    status = ExactnessResult.pending if inputs.verify else ExactnessResult.not_run
    started = time.perf_counter()
    first = trainings[0]
    weights = _export(settings, inputs, orders[0].config, first.final_checkpoint)
    return FinetuneRetrainOutcome(
        version_before=served.number,
        # The first order serves again: the fields describe it (every order is listed).
        first_affected_slice=(
            switched.orders[0].first_affected_slice
            if switched.orders
            else switched.first_affected_slice
        ),
        slices_retrained=first.slices_trained,
        slices_total=orders[0].config.slices,
        records_erased=switched.records_erased,
        checkpoint_before=switched.checkpoint_before,
        checkpoint_after=first.final_checkpoint,
        superseded_checkpoints=switched.superseded_checkpoints,
        lineage_hash=first.lineage_hash,
        retrain_seconds=round(sum(t.seconds for t in trainings), 4),
        export_seconds=round(time.perf_counter() - started, 4),
        exactness=FinetuneExactness(status),
        checkpoint_ids=tuple(first.checkpoint_ids),
        retained_keys=tuple(sorted(r.key for r in retained)),
        stage="restored",
        served_weights_sha256=weights,
        orders=_restored_orders(switched, trainings),
    )
