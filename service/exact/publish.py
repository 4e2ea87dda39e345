"""A retrained shard's stages after the retrain: publish it as the model's next version (one
transaction); destroy the checkpoints that saw the erased rows (none open; an old checkpoint
left behind undoes the erasure); then certify (one transaction): the destruction recorded and
every action that was waiting only for retrains closed with its certificate."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from models import slicing
from models.sisa import VersionManifest, checkpoint_key
from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.core.storage import artifact_store
from service.db.enums import ActionStatus, JobStatus
from service.db.tables import ErasureRequest, Job, MlModel, ModelVersion
from service.erasure.lifecycle import finish_request_if_done
from service.erasure.retrain_outcomes import ShardRetrainOutcome
from service.exact.finish import finish_exact_action
from service.exact.retrain import CLOSED, RetrainInputs
from service.exact.training import too_small_warnings
from service.exact.versions import (
    add_erasure_version,
    claimed_while_training,
    mark_purged_versions,
)
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
    """Record a retrain: new version, job done, audit events (``certify_retrain`` closes the
    actions once the superseded checkpoints are destroyed)."""
    model = session.get_one(MlModel, inputs.snapshot.model_id, with_for_update=True)
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    if claimed_while_training(session, model.id, [r.key for r in inputs.retained], inputs.shard):
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
    add_erasure_version(
        session,
        model,
        manifest=manifest.to_json(),
        manifest_hash=manifest.version_hash(),
        request_ids=request_ids,
        metrics=_version_metrics(current.metrics, outcome.shard, outcome),
    )
    superseded = set(outcome.superseded_checkpoints)
    if superseded:
        mark_purged_versions(
            session,
            model.id,
            lambda v: VersionManifest.from_json(v.manifest).holds_any(outcome.shard, superseded),
        )


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


def destroy_checkpoints(settings: Settings, checkpoints: list[str]) -> list[dict[str, Any]]:
    """Delete the old checkpoints trained on the erased rows (no transaction open; after the new
    version serves): one entry per checkpoint, ``deleted`` false when it was already gone."""
    return slicing.destroy_checkpoints(artifact_store(settings), checkpoints, checkpoint_key)


def certify_retrain(
    session: Session,
    settings: Settings,
    model_id: uuid.UUID,
    job_id: uuid.UUID,
    outcome: ShardRetrainOutcome,
    destroyed: list[dict[str, Any]],
    actor: str,
) -> None:
    """The destruction recorded, the job marked closed, and every action that waited only for
    retrains now done closed with its certificate (purging its rows)."""
    model = session.get_one(MlModel, model_id, with_for_update=True)
    job = session.get_one(Job, job_id, with_for_update=True)
    if outcome.superseded_checkpoints:
        append_event(
            session,
            actor=actor,
            action="artifacts.deleted",
            target_type="model",
            target_id=str(model.id),
            details={
                "model": model.name,
                "checkpoints": [d["checkpoint"] for d in destroyed],
                "deleted": sum(1 for d in destroyed if d["deleted"]),
            },
        )
    job.result = {**(job.result or {}), CLOSED: True}
    _finish_waiting_actions(session, settings, job.id, model, actor)
