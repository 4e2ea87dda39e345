"""A fine-tuned model's first training: request it (API), then load (short transaction),
fine-tune slice by slice and export the merged serving folder (none open), and publish
version 1 (one transaction)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.finetune import FinetuneConfig, FinetuneRecord, export_merged, train_sliced
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


def manifest_of(
    config: FinetuneConfig, base_id: str, checkpoints: list[str], final: str | None = None
) -> dict[str, Any]:
    """A fine-tune version: the base, the config and the slice checkpoints; ``final`` serves
    (default the last; a switched-off version may serve the initial adapters)."""
    return {
        "kind": "finetune",
        "base_id": base_id,
        "config": config.to_dict(),
        "checkpoints": list(checkpoints),
        "final": checkpoints[-1] if final is None else final,
    }


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
    return FinetuneInputs(
        job_id=job.id,
        model_id=model.id,
        model_name=model.name,
        base_dir=GenerativeConfig.model_validate(model.config).model_dir,
        config=finetune_config(model.name, finetune_settings(model)),
        records=load_records(session, settings, model.id, include_claimed=False),
    )


def slices_progress(progress: Callable[[float], None]) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        progress(done / max(total, 1))

    return report


def run_finetune(
    settings: Settings, inputs: FinetuneInputs, progress: Callable[[float], None]
) -> FinetuneOutcome:
    """Fine-tune and export the merged model for serving (no transaction open)."""
    store = artifact_store(settings)
    result = train_sliced(
        inputs.base_dir, inputs.config, inputs.records, store, progress=slices_progress(progress)
    )
    export_merged(
        inputs.base_dir,
        inputs.config,
        result.final_checkpoint,
        store,
        merged_root(settings),
        base_id=result.base_id,
    )
    metrics = {
        "train_records": result.num_records,
        "records_per_slice": result.records_per_slice,
        "training_seconds": round(result.seconds, 4),
        "checkpoint_bytes": sum(result.checkpoint_bytes.values()),
        "lineage_hash": result.lineage_hash,
    }
    return FinetuneOutcome(
        manifest_of(inputs.config, result.base_id, result.checkpoint_ids), metrics
    )


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
