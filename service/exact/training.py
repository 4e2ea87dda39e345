"""A model's first training: load (short transaction), train every shard (none open), record
the first version (a fresh transaction)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from models.sisa import ShardTrainingResult, TrainingRecord, VersionManifest, train_shard
from service.core.config import Settings, get_settings
from service.core.skip import Skip
from service.core.storage import artifact_store
from service.core.subject_keys import PayloadReader
from service.db.tables import MlModel
from service.exact.snapshot import (
    ModelSnapshot,
    load_ensemble,
    load_model_snapshot,
    load_retained_by_shard,
)
from service.jobs import lifecycle as jobs
from service.registry.service import publish_trained_version


@dataclass(frozen=True)
class TrainingInputs:
    job_id: uuid.UUID
    snapshot: ModelSnapshot
    by_shard: dict[int, list[TrainingRecord]]


@dataclass(frozen=True)
class TrainingOutcome:
    manifest: VersionManifest
    metrics: dict[str, Any]


def load_training(session: Session, job_id: uuid.UUID) -> TrainingInputs | Skip:
    """Claim the job and read the retained records (``Skip.not_claimed``: not ours to run)."""
    job = jobs.claim(session, job_id)
    if job is None:
        return Skip.not_claimed
    model = session.get_one(MlModel, job.model_id)
    reader = PayloadReader(get_settings())  # one for both reads: each key bundle opened once
    snapshot = load_model_snapshot(session, model, reader)
    by_shard = load_retained_by_shard(
        session, model.id, snapshot.spec, snapshot.config.shards, snapshot.base, reader
    )
    return TrainingInputs(job_id, snapshot, by_shard)


def train_all(
    settings: Settings, inputs: TrainingInputs, progress: Callable[[float], None]
) -> TrainingOutcome:
    snapshot = inputs.snapshot
    store = artifact_store(settings)
    started = time.perf_counter()
    results: dict[int, ShardTrainingResult] = {}
    shards = snapshot.config.shards
    for shard, records in inputs.by_shard.items():
        results[shard] = train_shard(
            snapshot.config, shard, records, store, progress=_share(progress, shard, shards)
        )
    seconds = time.perf_counter() - started
    manifest = VersionManifest.from_results(results.values())
    accuracy = None
    if len(snapshot.holdout_y):
        ensemble = load_ensemble(snapshot, manifest.finals, store)
        accuracy = float(ensemble.accuracy(snapshot.holdout_x, snapshot.holdout_y))
    metrics = {
        "holdout_accuracy": accuracy,
        "holdout_records": len(snapshot.holdout_y),
        "train_records": sum(len(r) for r in inputs.by_shard.values()),
        "training_seconds": round(seconds, 4),
        "shard_seconds": {str(s): round(r.seconds, 4) for s, r in results.items()},
        **learning_report(snapshot, list(results.values())),
    }
    return TrainingOutcome(manifest, metrics)


def record_training(
    session: Session, inputs: TrainingInputs, outcome: TrainingOutcome, actor: str
) -> Skip | None:
    """Publish version 1 (or the next) and mark the model ready (``Skip.reaped``: the job was
    taken back)."""
    model = session.get_one(MlModel, inputs.snapshot.model_id, with_for_update=True)
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    publish_trained_version(
        session,
        model,
        job,
        manifest=outcome.manifest.to_json(),
        manifest_hash=outcome.manifest.version_hash(),
        metrics=outcome.metrics,
        actor=actor,
    )
    return None


def learning_report(
    snapshot: ModelSnapshot, results: Sequence[ShardTrainingResult]
) -> dict[str, Any]:
    """What the shards learned: schedule, epochs and validation per shard, and a warning for
    every shard too small to show it learned anything (never published silently)."""
    shards = {
        str(r.shard): {
            "records": r.num_records,
            "epochs_by_slice": list(r.epochs_by_slice),
            "validation_records": r.validation_records,
            "validation_accuracy": r.validation_accuracy,
            "majority_accuracy": r.majority_accuracy,
        }
        for r in results
    }
    too_small = {
        str(r.shard): r.too_small for r in sorted(results, key=lambda r: r.shard) if r.too_small
    }
    config = snapshot.config
    return {
        "schedule": "early_stopping" if config.early_stopping else "fixed_epochs",
        "aggregation": snapshot.aggregation,
        "public_base": config.base_hash or None,
        "shards": shards,
        "shards_too_small": too_small,
        "warnings": too_small_warnings(too_small),
    }


def too_small_warnings(too_small: dict[str, str]) -> list[str]:
    return [f"shard {shard}: {reason}" for shard, reason in too_small.items()]


def _share(
    progress: Callable[[float], None], shard: int, shards: int
) -> Callable[[int, int], None]:
    """Shard ``shard``'s (slices done, total) as a fraction of the whole training."""

    def report(done: int, total: int) -> None:
        progress((shard + done / max(total, 1)) / shards)

    return report
