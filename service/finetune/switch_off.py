"""Exact removal at once: serve the stored checkpoint before the first slice that held an erased
subject (no training), then restore the later slices in the background.

``switch_exact`` and ``restore_exact`` run with no transaction open; ``publish.publish_exact``
publishes either as the next version and ``publish.finish_exact`` / ``publish.certify_restored``
issue their certificates (the restored one supersedes the switched-off one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from models.finetune import (
    SERVING_META,
    ensure_initial_checkpoint,
    export_merged,
    initial_checkpoint_id,
    switch_off,
    train_sliced,
)
from service.core.config import Settings
from service.core.storage import artifact_store, merged_root
from service.erasure.retrain_outcomes import (
    ExactnessResult,
    FinetuneExactness,
    FinetuneRetrainOutcome,
)
from service.finetune.retrain import ExactInputs
from service.finetune.training import slices_progress


def _export(settings: Settings, inputs: ExactInputs, checkpoint: str) -> str:
    """Merge ``checkpoint`` into serving weights (once); returns their sha256."""
    served = inputs.served
    folder = export_merged(
        served.base_dir,
        served.config,
        checkpoint,
        artifact_store(settings),
        merged_root(settings),
        base_id=served.base_id,
    )
    return str(json.loads((folder / SERVING_META).read_text())["weights_sha256"])


def switch_exact(settings: Settings, inputs: ExactInputs) -> FinetuneRetrainOutcome:
    """The checkpoint that serves the fine-tune without the subjects, merged for serving."""
    started = time.perf_counter()
    served = inputs.served
    config = served.config
    off = switch_off(
        config, inputs.records, inputs.erase_subjects, served.checkpoint, served.base_id
    )
    if off.checkpoint_served == initial_checkpoint_id(served.base_id, config):
        store = artifact_store(settings)
        ensure_initial_checkpoint(served.base_dir, config, store, served.base_id)
    weights = _export(settings, inputs, off.checkpoint_served)
    kept = off.checkpoint_served
    return FinetuneRetrainOutcome(
        version_before=served.number,
        first_affected_slice=off.first_affected_slice,
        slices_retrained=0,
        slices_total=config.slices,
        records_erased=off.erased_records,
        checkpoint_before=off.checkpoint_before,
        checkpoint_after=kept,
        superseded_checkpoints=tuple(off.superseded_checkpoints),
        lineage_hash=off.retained_prefix_hash,
        retrain_seconds=0.0,
        export_seconds=round(time.perf_counter() - started, 4),
        exactness=FinetuneExactness(ExactnessResult.not_run),
        checkpoint_ids=tuple(off.checkpoints_served),
        retained_keys=tuple(off.retained_prefix_keys),
        stage="switched_off",
        served_weights_sha256=weights,
        retained_prefix_sha256=off.retained_prefix_hash,
    )


def restore_exact(
    settings: Settings,
    inputs: ExactInputs,
    switched: FinetuneRetrainOutcome,
    progress: Callable[[float], None],
) -> FinetuneRetrainOutcome:
    """Retrain the switched-off slices on the retained records (resuming from the last stored
    checkpoint they share) and merge it for serving."""
    served = inputs.served
    config = served.config
    erased = set(inputs.erase_subjects)
    retained = [r for r in inputs.records if r.subject not in erased]
    store = artifact_store(settings)
    training = train_sliced(
        served.base_dir,
        config,
        retained,
        store,
        base_id=served.base_id,
        progress=slices_progress(progress),
    )
    # The from-scratch check is a whole fine-tune: its own job (service.finetune.verify).
    status = ExactnessResult.pending if inputs.verify else ExactnessResult.not_run
    exactness = FinetuneExactness(status)
    started = time.perf_counter()
    weights = _export(settings, inputs, training.final_checkpoint)
    return FinetuneRetrainOutcome(
        version_before=served.number,
        first_affected_slice=switched.first_affected_slice,
        slices_retrained=training.slices_trained,
        slices_total=config.slices,
        records_erased=switched.records_erased,
        checkpoint_before=switched.checkpoint_before,
        checkpoint_after=training.final_checkpoint,
        superseded_checkpoints=switched.superseded_checkpoints,
        lineage_hash=training.lineage_hash,
        retrain_seconds=round(training.seconds, 4),
        export_seconds=round(time.perf_counter() - started, 4),
        exactness=exactness,
        checkpoint_ids=tuple(training.checkpoint_ids),
        retained_keys=tuple(sorted(r.key for r in retained)),
        stage="restored",
        served_weights_sha256=weights,
    )
