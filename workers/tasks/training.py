"""ML tasks on the ``ml`` queue: the first training of a model, and one shard's retrain.

Shape of every task: read in a short transaction and close it; train with no transaction open;
write the outcome in a fresh transaction. Checkpoints are content-addressed, so a redelivered
task finds the slices it already trained in the artifact store and does not train them again.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
import uuid
from typing import Any

import numpy as np
from celery import shared_task
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.sisa import (
    Ensemble,
    Manifest,
    ShardTrainingResult,
    checkpoint_key,
    membership_p_values,
    train_shard,
    verify_bit_exact,
)
from service.audit import append_event
from service.db.base import utcnow
from service.db.enums import JobStatus, ModelStatus
from service.db.tables import (
    ActionJob,
    ErasureRequest,
    Job,
    MlModel,
    ModelVersion,
    RequestAction,
    TrainingRecord,
)
from service.erasure.completion import (
    all_jobs_done,
    fail_action,
    finish_exact_action,
    finish_request_if_done,
    job_results_for_action,
)
from service.exact.ml import artifact_store
from service.exact.snapshot import (
    ModelSnapshot,
    load_model_snapshot,
    load_pending_erasure,
    load_retained,
    load_retained_by_shard,
    stack_x,
)
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_RETRAIN_SHARD, TASK_TRAIN_MODEL
from workers.base import DbTask, db_task_options
from workers.progress import progress_reporter

log = logging.getLogger(__name__)
ACTOR = "worker"
# Another retrain of the same shard is running: try again after this many seconds.
SHARD_BUSY_RETRY_S = 5


class JobNotClaimed(Exception):
    pass


def _claim(session: Session, job_id: uuid.UUID) -> Job | None:
    """pending → running; None when the job is finished or another worker holds it."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status != JobStatus.pending:
        return None
    job.status = JobStatus.running
    job.attempts += 1
    job.started_at = job.heartbeat_at = utcnow()
    job.progress = 0.0
    session.flush()  # the one-running-per-shard index fires here
    return job


def _manifest_finals(manifest: dict[str, Any]) -> Manifest:
    return Manifest.from_dict(manifest["final"])


def _version_manifest(results: dict[int, ShardTrainingResult]) -> dict[str, Any]:
    return {
        "final": {str(s): r.final_checkpoint for s, r in sorted(results.items())},
        "slices": {str(s): list(r.checkpoint_ids) for s, r in sorted(results.items())},
    }


def _manifest_hash(manifest: dict[str, Any]) -> str:
    return _manifest_finals(manifest).version_hash()


# --------------------------------------------------------------------------- train_model


@shared_task(name=TASK_TRAIN_MODEL, **db_task_options(max_retries=5))
def train_model(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    with self.transaction() as session:
        job = _claim(session, jid)
        if job is None:
            return "not_claimed"
        model = session.get_one(MlModel, job.model_id)
        snapshot = load_model_snapshot(session, model)
        by_shard = load_retained_by_shard(session, model.id, snapshot.spec, snapshot.config.shards)
    try:
        store = artifact_store(self.settings)
        started = time.perf_counter()
        results: dict[int, ShardTrainingResult] = {}
        shards = snapshot.config.shards
        for shard, records in by_shard.items():
            report = progress_reporter(self, jid, start=shard / shards, span=1 / shards)
            results[shard] = train_shard(snapshot.config, shard, records, store, progress=report)
        seconds = time.perf_counter() - started
        manifest = _version_manifest(results)
        ensemble = Ensemble.load(snapshot.config, _manifest_finals(manifest), store)
        accuracy = (
            float(ensemble.accuracy(snapshot.holdout_x, snapshot.holdout_y))
            if len(snapshot.holdout_y)
            else None
        )
    except Exception as exc:
        _fail_job(self, jid, "training_error", exc)
        raise
    with self.transaction() as session:
        model = session.get_one(MlModel, snapshot.model_id, with_for_update=True)
        job = session.get_one(Job, jid, with_for_update=True)
        if job.status != JobStatus.running:
            return "reaped"
        number = (model.current_version or 0) + 1
        metrics = {
            "holdout_accuracy": accuracy,
            "holdout_records": len(snapshot.holdout_y),
            "train_records": sum(len(r) for r in by_shard.values()),
            "training_seconds": round(seconds, 4),
            "shard_seconds": {str(s): round(r.seconds, 4) for s, r in results.items()},
        }
        session.add(
            ModelVersion(
                id=uuid.uuid4(),
                model_id=model.id,
                number=number,
                manifest=manifest,
                manifest_hash=_manifest_hash(manifest),
                cause="training",
                request_ids=[],
                metrics=metrics,
            )
        )
        model.current_version = number
        model.status = ModelStatus.ready
        job.status = JobStatus.done
        job.progress = 1.0
        job.finished_at = utcnow()
        job.result = {"version": number, **metrics}
        append_event(
            session,
            actor=ACTOR,
            action="model.trained",
            target_type="model",
            target_id=str(model.id),
            details={
                "model": model.name,
                "version": number,
                "job_id": job_id,
                **metrics,
                "manifest_hash": _manifest_hash(manifest),
            },
        )
    return "done"


# ------------------------------------------------------------------------- retrain_shard


@shared_task(name=TASK_RETRAIN_SHARD, **db_task_options(max_retries=5))
def retrain_shard(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    try:
        with self.transaction() as session:
            job = _claim(session, jid)
            if job is None:
                return "not_claimed"
            shard = job.shard
            model = session.get_one(MlModel, job.model_id)
            snapshot = load_model_snapshot(session, model)
            retained = load_retained(session, model.id, snapshot.spec, shard)
            pending = load_pending_erasure(session, model.id, snapshot.spec, shard)
    except IntegrityError:
        # Another retrain of this shard is running; this one waits its turn.
        raise self.retry(countdown=SHARD_BUSY_RETRY_S, max_retries=None) from None
    if snapshot.manifest is None or snapshot.version_number is None:
        _fail_job(self, jid, "model_not_trained", None)
        return "failed"
    try:
        outcome = _retrain(self, jid, shard, snapshot, retained, pending)
    except Exception as exc:
        _fail_job(self, jid, "retrain_error", exc)
        raise
    return _publish(self, jid, shard, snapshot, {r.key for r in retained}, outcome)


def _retrain(
    task: DbTask,
    job_id: uuid.UUID,
    shard: int,
    snapshot: ModelSnapshot,
    retained: list[Any],
    pending: list[Any],
) -> dict[str, Any]:
    assert snapshot.manifest is not None
    store = artifact_store(task.settings)
    verify = _should_verify(snapshot, job_id)
    report = progress_reporter(task, job_id, 0.0, 0.5 if verify else 0.9)
    result = train_shard(snapshot.config, shard, retained, store, progress=report)
    exactness: dict[str, Any] = {"status": "not_run", "policy": snapshot.policy.verify_exact}
    if verify:
        check = verify_bit_exact(snapshot.config, shard, retained, result.final_checkpoint, store)
        exactness = {
            "status": "bit_exact" if check.bit_exact else "mismatch",
            "policy": snapshot.policy.verify_exact,
            "tensors_compared": check.tensors_compared,
            "mismatched_tensors": list(check.mismatched),
            "seconds": round(check.seconds, 4),
        }
    old_finals = _manifest_finals(snapshot.manifest)
    new_finals = old_finals.replace({shard: result.final_checkpoint})
    before = Ensemble.load(snapshot.config, old_finals, store)
    after = Ensemble.load(snapshot.config, new_finals, store)
    has_holdout = len(snapshot.holdout_y) > 0
    membership: dict[str, Any] = {"status": "not_computed", "reason": "no held-out records"}
    if has_holdout and pending:
        x = stack_x(pending, snapshot.spec.input_dim)
        y = np.array([r.y for r in pending], dtype=np.int64)
        p = membership_p_values(after, x, y, snapshot.holdout_x, snapshot.holdout_y)
        membership = {
            "status": "computed",
            "erased_records": len(p),
            "non_members": len(snapshot.holdout_y),
            "p_value_min": round(min(p), 6),
            "p_value_median": round(statistics.median(p), 6),
            "meaning": "rank of each erased record's loss among held-out non-members under the "
            "new model; small values would mean it still looks like a training member. "
            "Evidence, not the guarantee.",
        }
    old_slices: list[str] = list(snapshot.manifest["slices"][str(shard)])
    return {
        "shard": shard,
        "version_before": snapshot.version_number,
        "checkpoint_before": old_finals[shard],
        "checkpoint_after": result.final_checkpoint,
        "checkpoint_ids": list(result.checkpoint_ids),
        # Where the erased rows sat; a retry after a crash resumes later (cached slices), which
        # slices_retrained shows.
        "first_affected_slice": min((r.slice for r in pending), default=result.resumed_from_slice),
        "slices_total": snapshot.config.slices,
        "slices_retrained": result.slices_trained,
        "retained_records": len(retained),
        "lineage_hash": result.lineage_hash,
        "retrain_seconds": round(result.seconds, 4),
        "exactness": exactness,
        "membership": membership,
        "accuracy_before": float(before.accuracy(snapshot.holdout_x, snapshot.holdout_y))
        if has_holdout
        else None,
        "accuracy_after": float(after.accuracy(snapshot.holdout_x, snapshot.holdout_y))
        if has_holdout
        else None,
        "superseded_checkpoints": sorted(set(old_slices) - set(result.checkpoint_ids)),
    }


def _should_verify(snapshot: ModelSnapshot, job_id: uuid.UUID) -> bool:
    policy = snapshot.policy
    if policy.verify_exact == "always":
        return True
    if policy.verify_exact == "never":
        return False
    # Sampled: decided by the job id so that a redelivery makes the same choice.
    bucket = int(hashlib.sha256(job_id.bytes).hexdigest()[:8], 16) % 10_000
    return bucket < policy.verify_sample_rate * 10_000


def _publish(
    task: DbTask,
    job_id: uuid.UUID,
    shard: int,
    snapshot: ModelSnapshot,
    trained_keys: set[str],
    outcome: dict[str, Any],
) -> str:
    with task.transaction() as session:
        model = session.get_one(MlModel, snapshot.model_id, with_for_update=True)
        job = session.get_one(Job, job_id, with_for_update=True)
        if job.status != JobStatus.running:
            return "reaped"
        claimed_now = set(
            session.scalars(
                select(TrainingRecord.record_key).where(
                    TrainingRecord.model_id == model.id,
                    TrainingRecord.shard == shard,
                    TrainingRecord.erasure_request_id.is_not(None),
                )
            )
        )
        if claimed_now & trained_keys:
            # A request claimed rows of this shard while we trained: what we trained still
            # holds them. Run again (the unaffected prefix is found in the store).
            job.status = JobStatus.pending
            enqueue_after_commit(session, task.settings, TASK_RETRAIN_SHARD, [str(job_id)])
            return "requeued"
        current = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.number == model.current_version
            )
        )
        assert current is not None
        manifest = {
            "final": {**current.manifest["final"], str(shard): outcome["checkpoint_after"]},
            "slices": {**current.manifest["slices"], str(shard): outcome["checkpoint_ids"]},
        }
        request_ids = sorted(
            str(r)
            for r in session.scalars(
                select(RequestAction.request_id)
                .join(ActionJob, ActionJob.action_id == RequestAction.id)
                .where(ActionJob.job_id == job_id)
            )
        )
        if manifest != current.manifest:
            number = current.number + 1
            session.add(
                ModelVersion(
                    id=uuid.uuid4(),
                    model_id=model.id,
                    number=number,
                    manifest=manifest,
                    manifest_hash=_manifest_hash(manifest),
                    cause="erasure",
                    request_ids=request_ids,
                    metrics={"holdout_accuracy": outcome["accuracy_after"]},
                )
            )
            model.current_version = number
            _mark_purged_versions(session, model.id, shard, set(outcome["superseded_checkpoints"]))
        outcome["version_after"] = model.current_version
        job.status = JobStatus.done
        job.progress = 1.0
        job.finished_at = utcnow()
        job.result = {k: v for k, v in outcome.items() if k != "checkpoint_ids"}
        session.flush()
        append_event(
            session,
            actor=ACTOR,
            action="shard.retrained",
            target_type="model",
            target_id=str(model.id),
            details={
                "model": model.name,
                "job_id": str(job_id),
                "request_ids": request_ids,
                **job.result,
            },
        )
        if outcome["version_after"] != snapshot.version_number:
            append_event(
                session,
                actor=ACTOR,
                action="model.version_published",
                target_type="model",
                target_id=str(model.id),
                details={
                    "model": model.name,
                    "version": model.current_version,
                    "manifest_hash": _manifest_hash(manifest),
                    "request_ids": request_ids,
                },
            )
        _finish_waiting_actions(session, job_id, model)
    _delete_superseded(task, snapshot, outcome["superseded_checkpoints"])
    return "done"


def _mark_purged_versions(
    session: Session, model_id: uuid.UUID, shard: int, superseded: set[str]
) -> None:
    if not superseded:
        return
    versions = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model_id, ModelVersion.purged_at.is_(None)
        )
    )
    for version in versions:
        if superseded & set(version.manifest["slices"].get(str(shard), [])):
            version.purged_at = utcnow()


def _finish_waiting_actions(session: Session, job_id: uuid.UUID, model: MlModel) -> None:
    actions = session.scalars(
        select(RequestAction)
        .join(ActionJob, ActionJob.action_id == RequestAction.id)
        .where(ActionJob.job_id == job_id)
        .order_by(RequestAction.id)
        .with_for_update()
    )
    for action in actions:
        jobs = job_results_for_action(session, action.id)
        if action.status != "running" or not all_jobs_done(jobs):
            continue
        request = session.get_one(ErasureRequest, action.request_id, with_for_update=True)
        shards = [j.result for j in jobs]
        finish_exact_action(
            session,
            action,
            request,
            model,
            shards=shards,
            version_before=min(s["version_before"] for s in shards),
            version_after=model.current_version,
            actor=ACTOR,
        )
        finish_request_if_done(session, request, ACTOR)


def _delete_superseded(task: DbTask, snapshot: ModelSnapshot, checkpoints: list[str]) -> None:
    """Old checkpoints trained on the erased rows: delete them so their influence is gone."""
    if not checkpoints:
        return
    store = artifact_store(task.settings)
    deleted = sum(1 for c in checkpoints if store.delete(checkpoint_key(c)))
    with task.transaction() as session:
        append_event(
            session,
            actor=ACTOR,
            action="artifacts.deleted",
            target_type="model",
            target_id=str(snapshot.model_id),
            details={"model": snapshot.name, "checkpoints": checkpoints, "deleted": deleted},
        )


def _fail_job(task: DbTask, job_id: uuid.UUID, code: str, exc: BaseException | None) -> None:
    """Give up on a job for good only after its attempts are used up; else leave it retryable."""
    # The exception's type only: messages could quote data.
    log.error("job %s failed: %s (%s)", job_id, code, type(exc).__name__ if exc else "-")
    with task.transaction() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status in (JobStatus.done, JobStatus.failed):
            return
        if job.attempts < task.settings.max_job_attempts and exc is not None:
            job.status = JobStatus.pending
            job.error_code = code
            enqueue_after_commit(
                session,
                task.settings,
                TASK_RETRAIN_SHARD if job.shard >= 0 else TASK_TRAIN_MODEL,
                [str(job_id)],
                countdown=SHARD_BUSY_RETRY_S,
            )
            return
        mark_job_failed(session, job, code, ACTOR)


def mark_job_failed(session: Session, job: Job, code: str, actor: str) -> None:
    job.status = JobStatus.failed
    job.error_code = code
    job.finished_at = utcnow()
    model = session.get_one(MlModel, job.model_id, with_for_update=True)
    append_event(
        session,
        actor=actor,
        action="job.failed",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "job_id": str(job.id),
            "kind": job.kind,
            "shard": job.shard,
            "error_code": code,
            "attempts": job.attempts,
        },
    )
    if job.shard < 0:
        model.status = ModelStatus.failed
        return
    actions = session.scalars(
        select(RequestAction)
        .join(ActionJob, ActionJob.action_id == RequestAction.id)
        .where(ActionJob.job_id == job.id)
        .with_for_update()
    )
    for action in actions:
        if action.status != "running":
            continue
        request = session.get_one(ErasureRequest, action.request_id, with_for_update=True)
        fail_action(session, action, request, code, actor)
        finish_request_if_done(session, request, actor)
