"""Publishing a retrained shard as the model's next version, in one transaction; then destroying
the checkpoints that saw the erased rows (an old checkpoint left behind undoes the erasure)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.sisa import VersionManifest, checkpoint_key
from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.core.storage import artifact_store
from service.db.base import utcnow
from service.db.enums import ActionStatus, JobStatus, VersionCause
from service.db.tables import ErasureRequest, Job, MlModel, ModelVersion, TrainingRecord
from service.erasure.lifecycle import finish_request_if_done
from service.erasure.retrain_outcomes import ShardRetrainOutcome
from service.exact.finish import finish_exact_action
from service.exact.retrain import RetrainInputs
from service.exact.training import too_small_warnings
from service.jobs import lifecycle as jobs
from service.registry.service import current_version


class PublishResult(StrEnum):
    """How publishing a retrain ended (a fine-tune's too: service.finetune.publish);
    ``Skip.reaped`` when the reaper took the job back (the rerun publishes)."""

    done = "done"
    requeued = "requeued"  # rows it trained on were claimed while it trained: run again


def publish_retrain(
    session: Session,
    settings: Settings,
    inputs: RetrainInputs,
    outcome: ShardRetrainOutcome,
    actor: str,
) -> PublishResult | Skip:
    """Record a retrain: new version, job done, audit events, and every action that was
    waiting only for this job closed with its certificate."""
    model = session.get_one(MlModel, inputs.snapshot.model_id, with_for_update=True)
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    if _claimed_while_training(session, model.id, inputs):
        # What we trained still holds rows a request claimed meanwhile. Run again: the
        # unaffected prefix is found in the store.
        jobs.requeue(session, settings, job)
        return PublishResult.requeued
    current = current_version(session, model)
    assert current is not None
    served = VersionManifest.from_json(current.manifest)
    manifest = served.with_shard(inputs.shard, list(outcome.checkpoint_ids))
    request_ids = sorted(str(a.request_id) for a in jobs.actions_waiting_for(session, job.id))
    if manifest != served:
        _publish_version(session, model, current, manifest, outcome, request_ids)
    published = outcome.published(model.current_version)
    jobs.finish(session, job, published.to_json())
    session.flush()
    _audit_retrained(session, model, job, request_ids, actor)
    if published.version_after != inputs.snapshot.version_number:
        _audit_version(session, model, manifest, request_ids, actor)
    _finish_waiting_actions(session, settings, job.id, model, actor)
    return PublishResult.done


def _publish_version(
    session: Session,
    model: MlModel,
    current: ModelVersion,
    manifest: VersionManifest,
    outcome: ShardRetrainOutcome,
    request_ids: list[str],
) -> None:
    """The next version serves the retrained shard; versions that need a checkpoint it
    supersedes are marked purged."""
    number = current.number + 1
    session.add(
        ModelVersion(
            id=uuid.uuid4(),
            model_id=model.id,
            number=number,
            manifest=manifest.to_json(),
            manifest_hash=manifest.version_hash(),
            cause=VersionCause.erasure,
            request_ids=request_ids,
            metrics=_version_metrics(current.metrics, outcome.shard, outcome),
        )
    )
    model.current_version = number
    _mark_purged_versions(session, model.id, outcome.shard, set(outcome.superseded_checkpoints))


def _audit_retrained(
    session: Session, model: MlModel, job: Job, request_ids: list[str], actor: str
) -> None:
    append_event(
        session,
        actor=actor,
        action="shard.retrained",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "job_id": str(job.id),
            "request_ids": request_ids,
            **job.result,
        },
    )


def _audit_version(
    session: Session, model: MlModel, manifest: VersionManifest, request_ids: list[str], actor: str
) -> None:
    append_event(
        session,
        actor=actor,
        action="model.version_published",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "version": model.current_version,
            "manifest_hash": manifest.version_hash(),
            "request_ids": request_ids,
        },
    )


def _version_metrics(served: Any, shard: int, outcome: ShardRetrainOutcome) -> dict[str, Any]:
    """The new version's figures; the too-small report carried over, this shard's redone."""
    too_small = dict((served or {}).get("shards_too_small") or {})
    too_small.pop(str(shard), None)
    if outcome.too_small:
        too_small[str(shard)] = outcome.too_small
    too_small = dict(sorted(too_small.items(), key=lambda item: int(item[0])))
    return {
        "holdout_accuracy": outcome.accuracy_after,
        "shards_too_small": too_small,
        "warnings": too_small_warnings(too_small),
    }


def _claimed_while_training(session: Session, model_id: uuid.UUID, inputs: RetrainInputs) -> bool:
    claimed_now = set(
        session.scalars(
            select(TrainingRecord.record_key).where(
                TrainingRecord.model_id == model_id,
                TrainingRecord.shard == inputs.shard,
                TrainingRecord.erasure_request_id.is_not(None),
            )
        )
    )
    return bool(claimed_now & {r.key for r in inputs.retained})


def _mark_purged_versions(
    session: Session, model_id: uuid.UUID, shard: int, superseded: set[str]
) -> None:
    """Older versions that need a destroyed checkpoint can no longer be loaded: say so."""
    if not superseded:
        return
    versions = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model_id, ModelVersion.purged_at.is_(None)
        )
    )
    for version in versions:
        if VersionManifest.from_json(version.manifest).holds_any(shard, superseded):
            version.purged_at = utcnow()


def _finish_waiting_actions(
    session: Session, settings: Settings, job_id: uuid.UUID, model: MlModel, actor: str
) -> None:
    for action in jobs.actions_waiting_for(session, job_id):
        waited = jobs.jobs_of_action(session, action.id)
        if action.status != ActionStatus.running or any(j.status != JobStatus.done for j in waited):
            continue
        request = session.get_one(ErasureRequest, action.request_id, with_for_update=True)
        shards = [ShardRetrainOutcome.from_json(j.result) for j in waited]
        finish_exact_action(
            session,
            settings,
            action,
            request,
            model,
            shards=shards,
            version_before=min(s.version_before for s in shards),
            version_after=model.current_version,
            actor=actor,
        )
        finish_request_if_done(session, request, actor)


def destroy_checkpoints(settings: Settings, checkpoints: list[str]) -> int:
    """Delete the old checkpoints trained on the erased rows (no transaction open); returns
    how many were there to delete. Call after the new version serves."""
    store = artifact_store(settings)
    return sum(1 for c in checkpoints if store.delete(checkpoint_key(c)))


def record_destroyed(
    session: Session, inputs: RetrainInputs, checkpoints: list[str], deleted: int, actor: str
) -> None:
    append_event(
        session,
        actor=actor,
        action="artifacts.deleted",
        target_type="model",
        target_id=str(inputs.snapshot.model_id),
        details={"model": inputs.snapshot.name, "checkpoints": checkpoints, "deleted": deleted},
    )
