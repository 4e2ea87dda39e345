"""A fine-tuned model's first training: request it (API), then load (short transaction),
fine-tune slice by slice and export the merged serving folder (none open), and publish
version 1 (one transaction)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.finetune import (
    FinetuneConfig,
    FinetuneRecord,
    FinetuneResult,
    export_merged,
    train_sliced,
    with_orders,
)
from service.audit import append_event
from service.core.config import Settings
from service.core.errors import conflict
from service.core.skip import Skip
from service.core.storage import artifact_store, merged_root
from service.db.enums import JobKind, JobStatus, ModelStatus
from service.db.tables import Job, MlModel, TrainingRecord
from service.finetune.records import finetune_config, finetune_settings, load_records
from service.jobs import lifecycle as jobs
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_FINETUNE_MODEL
from service.registry.config import GenerativeConfig
from service.registry.service import publish_trained_version
from service.rules.finetuned_serving import ServedOrder, manifest_orders


def manifest_of(
    base_id: str, orders: Sequence[ServedOrder], served_order: int = 0
) -> dict[str, Any]:
    """A fine-tune version: the base, and the config and slice checkpoints of the order that
    serves, whose ``final`` serves (the last checkpoint, or after a switch-off an earlier one
    or the initial adapters). Several slice orders are listed whole under ``orders``; a
    fine-tune with one order keeps the manifest it always had."""
    served = orders[served_order]
    manifest: dict[str, Any] = {
        "kind": "finetune",
        "base_id": base_id,
        "config": served.config.to_dict(),
        "checkpoints": list(served.checkpoints),
        "final": served.final,
    }
    if len(orders) > 1:
        manifest["served_order"] = served_order
        manifest["orders"] = [
            {
                "order": index,
                "config": order.config.to_dict(),
                "checkpoints": list(order.checkpoints),
                "final": order.final,
            }
            for index, order in enumerate(orders)
        ]
    return manifest


def manifest_checkpoints(manifest: Mapping[str, Any]) -> set[str]:
    """Every checkpoint a version needs, over all its orders."""
    return {c for order in manifest_orders(manifest) for c in order.checkpoints}


def manifest_hash(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_finetune(session: Session, settings: Settings, model: MlModel, actor: str) -> Job:
    finetune_settings(model)
    if model.status == ModelStatus.training:
        raise conflict("training_in_progress", "this model is already being trained")
    if model.status == ModelStatus.ready:
        raise conflict("model_already_trained", "this model has been trained already")
    if not session.scalar(select(func.count()).where(TrainingRecord.model_id == model.id)):
        raise conflict("no_training_records", "ingest training records before training")
    model.status = ModelStatus.training
    job = Job(id=uuid.uuid4(), kind=JobKind.finetune, model_id=model.id, status=JobStatus.pending)
    session.add(job)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="model.training_requested",
        target_type="model",
        target_id=str(model.id),
        details={"model": model.name, "job_id": str(job.id), "kind": job.kind.value},
    )
    enqueue_after_commit(session, settings, TASK_FINETUNE_MODEL, [str(job.id)])
    return job


@dataclass(frozen=True)
class FinetuneInputs:
    job_id: uuid.UUID
    model_id: uuid.UUID
    model_name: str
    base_dir: str
    config: FinetuneConfig
    records: list[FinetuneRecord]
    orders: int = 1
    """Slice orders to train (S3T's permutations of ``config``'s slices); the first serves."""

    @property
    def order_configs(self) -> list[FinetuneConfig]:
        return with_orders(self.config, self.orders)


@dataclass(frozen=True)
class FinetuneOutcome:
    manifest: dict[str, Any]
    metrics: dict[str, Any]


def load_finetune(session: Session, settings: Settings, job_id: uuid.UUID) -> FinetuneInputs | Skip:
    """Claim the job and read the records (``Skip.not_claimed``: not ours to run)."""
    job = jobs.claim(session, job_id)
    if job is None:
        return Skip.not_claimed
    model = session.get_one(MlModel, job.model_id)
    ft = finetune_settings(model)
    return FinetuneInputs(
        job_id=job.id,
        model_id=model.id,
        model_name=model.name,
        base_dir=GenerativeConfig.model_validate(model.config).model_dir,
        config=finetune_config(model.name, ft),
        records=load_records(session, settings, model.id, include_claimed=False),
        orders=ft.orders,
    )


def slices_progress(
    progress: Callable[[float], None], part: int = 0, parts: int = 1
) -> Callable[[int, int], None]:
    """Slices done as the job's progress; ``part`` of ``parts`` when the job trains several
    slice orders one after another."""

    def report(done: int, total: int) -> None:
        progress((part + done / max(total, 1)) / parts)

    return report


def run_finetune(
    settings: Settings, inputs: FinetuneInputs, progress: Callable[[float], None]
) -> FinetuneOutcome:
    """Fine-tune every slice order, one after another, and export the first order's merged
    model for serving (no transaction open)."""
    store = artifact_store(settings)
    configs = inputs.order_configs
    results: list[FinetuneResult] = [
        train_sliced(
            inputs.base_dir,
            config,
            inputs.records,
            store,
            progress=slices_progress(progress, index, len(configs)),
        )
        for index, config in enumerate(configs)
    ]
    first = results[0]
    export_merged(
        inputs.base_dir,
        inputs.config,
        first.final_checkpoint,
        store,
        merged_root(settings),
        base_id=first.base_id,
    )
    orders = [
        ServedOrder(config, tuple(r.checkpoint_ids), r.final_checkpoint)
        for config, r in zip(configs, results, strict=True)
    ]
    return FinetuneOutcome(manifest_of(first.base_id, orders), _training_metrics(results))


def _training_metrics(results: Sequence[FinetuneResult]) -> dict[str, Any]:
    """The first order's records and lineage; time and bytes summed over every order (what
    ``lethe models plan`` prices orders by)."""
    first = results[0]
    metrics: dict[str, Any] = {
        "train_records": first.num_records,
        "records_per_slice": first.records_per_slice,
        "training_seconds": round(sum(r.seconds for r in results), 4),
        "checkpoint_bytes": sum(sum(r.checkpoint_bytes.values()) for r in results),
        "lineage_hash": first.lineage_hash,
    }
    if len(results) > 1:
        metrics["orders"] = len(results)
        metrics["order_training_seconds"] = [round(r.seconds, 4) for r in results]
    return metrics


def record_finetune(
    session: Session, inputs: FinetuneInputs, outcome: FinetuneOutcome, actor: str
) -> Skip | None:
    """Publish the first version and mark the model ready (``Skip.reaped``: the job was taken
    back)."""
    model = session.get_one(MlModel, inputs.model_id, with_for_update=True)
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    publish_trained_version(
        session,
        model,
        job,
        manifest=outcome.manifest,
        manifest_hash=manifest_hash(outcome.manifest),
        metrics=outcome.metrics,
        actor=actor,
    )
    return None
