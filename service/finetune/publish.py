"""After an exact retrain of a fine-tune: publish the new weights as the next version (one
transaction; serving switches on its next read), destroy the checkpoints and merged weights
that saw the erased subjects (no transaction open), then close the actions (one transaction):
``exact_retrain`` certificate listing what was destroyed, the subjects' rules retired, the
records' content deleted."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.finetune import destroy_checkpoints
from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.core.storage import artifact_store, drop_merged
from service.db.base import utcnow
from service.db.enums import ActionStatus
from service.db.tables import ErasureRequest, Job, MlModel, ModelVersion
from service.erasure.certificates import (
    RESTORE_TO_FOLLOW,
    current_certificate,
    exact_certificate,
    issue_certificate,
)
from service.erasure.host_purges import record_purges, with_hosts
from service.erasure.lifecycle import finish_request_if_done, move_action
from service.erasure.retrain_outcomes import FinetuneRetrainOutcome
from service.exact.finish import purge_records, record_erased, records_erased
from service.exact.physical import carried_claim, physical_deletion_claim
from service.exact.publish import PublishResult
from service.exact.versions import (
    add_erasure_version,
    claimed_while_training,
    mark_purged_versions,
)
from service.finetune.retrain import ExactInputs
from service.finetune.rules import retire_rules
from service.finetune.training import manifest_checkpoints, manifest_hash, manifest_of
from service.jobs import lifecycle as jobs
from service.rules.finetuned_serving import ServedOrder, served_version


def publish_exact(
    session: Session,
    settings: Settings,
    inputs: ExactInputs,
    outcome: FinetuneRetrainOutcome,
    actor: str,
) -> PublishResult | Skip:
    """Publish the retrained fine-tune as the next version (``requeued``: records were claimed
    while it trained, run again)."""
    model = session.get_one(MlModel, inputs.model_id, with_for_update=True)
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    if claimed_while_training(session, model.id, outcome.retained_keys):
        jobs.requeue(session, settings, job)
        return PublishResult.requeued
    if served_version(session, model).checkpoint != outcome.checkpoint_after:
        _add_version(session, model, inputs, outcome)
        _audit_published(session, model, job, inputs, outcome, actor)
    published = outcome.published(model.current_version or 0).to_json()
    if outcome.switched_off:
        job.result = published  # the job goes on: the restore follows
    else:
        jobs.finish(session, job, published)
    return PublishResult.done


def _add_version(
    session: Session, model: MlModel, inputs: ExactInputs, outcome: FinetuneRetrainOutcome
) -> None:
    manifest = manifest_of(inputs.served.base_id, *_orders_after(inputs, outcome))
    add_erasure_version(
        session,
        model,
        manifest=manifest,
        manifest_hash=manifest_hash(manifest),
        request_ids=inputs.request_ids,
        metrics={"lineage_hash": outcome.lineage_hash, "stage": outcome.stage},
    )
    superseded = set(outcome.superseded_checkpoints)
    mark_purged_versions(
        session, model.id, lambda v: bool(superseded & manifest_checkpoints(v.manifest))
    )


def _orders_after(
    inputs: ExactInputs, outcome: FinetuneRetrainOutcome
) -> tuple[list[ServedOrder], int]:
    """Every slice order of the next version, and the one that serves."""
    served = inputs.served
    if not outcome.orders:
        return [ServedOrder(served.config, outcome.checkpoint_ids, outcome.checkpoint_after)], 0
    orders = [
        ServedOrder(served.orders[o.order].config, o.checkpoint_ids, o.checkpoint_after)
        for o in outcome.orders
    ]
    return orders, outcome.served_order


def _audit_published(
    session: Session,
    model: MlModel,
    job: Job,
    inputs: ExactInputs,
    outcome: FinetuneRetrainOutcome,
    actor: str,
) -> None:
    version = session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.number == model.current_version
        )
    ).one()
    append_event(
        session,
        actor=actor,
        action="model.version_published",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "version": model.current_version,
            "manifest_hash": version.manifest_hash,
            "request_ids": inputs.request_ids,
            "job_id": str(job.id),
            "stage": outcome.stage,
            "slices_retrained": outcome.slices_retrained,
            "served_weights_sha256": outcome.served_weights_sha256,
            "exactness": outcome.exactness.status.value,
        },
    )


def destroy_artifacts(settings: Settings, checkpoints: list[str]) -> list[dict[str, Any]]:
    """Delete the superseded checkpoints and any merged weights made from them (no
    transaction open; after the new version serves). One entry per artifact with its sha256
    and the time it was destroyed."""
    # The merged weights first: a serving process on this host drops (unrecorded) any merged
    # folder whose checkpoint is gone when it loads the new version, so deleting the
    # checkpoints first could leave this list, and the certificate, without the folder.
    destroyed = list(drop_merged(settings, checkpoints))
    for entry in destroy_checkpoints(artifact_store(settings), checkpoints):
        destroyed.append({"type": "checkpoint", **entry, "destroyed_at": utcnow().isoformat()})
    return destroyed


def finish_exact(
    session: Session,
    settings: Settings,
    model_id: uuid.UUID,
    job_id: uuid.UUID,
    outcome: FinetuneRetrainOutcome,
    destroyed: list[dict[str, Any]],
    actor: str,
) -> int:
    """Close every action the job served; returns how many were closed."""
    model = session.get_one(MlModel, model_id, with_for_update=True)
    append_event(
        session,
        actor=actor,
        action="artifacts.deleted",
        target_type="model",
        target_id=str(model.id),
        details={"model": model.name, "artifacts": destroyed},
    )
    version_after = model.current_version
    closed = []
    waiting = [
        a for a in jobs.actions_waiting_for(session, job_id) if a.status == ActionStatus.running
    ]
    if waiting and outcome.superseded_checkpoints:
        # Every other host deletes its own copies of what was destroyed here, and confirms.
        local = [d for d in destroyed if d["type"] == "merged_weights"]
        request_ids = sorted({str(a.request_id) for a in waiting})
        checkpoints = list(outcome.superseded_checkpoints)
        record_purges(session, settings, model.id, request_ids, checkpoints, local, actor)
    for action in waiting:
        request = session.get_one(ErasureRequest, action.request_id, with_for_update=True)
        # Purged first: the certificate names the keys actually destroyed (one transaction).
        purge = purge_records(session, request.id, model.id)
        body = exact_certificate(
            request=request,
            model=model,
            slices=outcome,
            records_erased=records_erased(session, request.id, model.id),
            version_before=outcome.version_before,
            version_after=version_after,
            physical_deletion=physical_deletion_claim(settings, purge.keys_destroyed),
        )
        body["destroyed_artifacts"] = destroyed
        body["plain_words"] = (
            f"{body['plain_words']} {len(destroyed)} artifact(s) that had seen the records "
            "were destroyed (listed with their hashes and times); the verifier rules that "
            "suppressed the subject in the meantime are retired."
        )
        if outcome.switched_off:
            body["plain_words"] += " " + RESTORE_TO_FOLLOW
        issue_certificate(session, action, model, with_hosts(session, body, model.id), actor)
        move_action(session, action, ActionStatus.done, actor=actor, model_name=model.name)
        record_erased(session, request, model, purge, actor)
        closed.append(request)
    retire_rules(session, settings, model, {str(r.id) for r in closed}, actor)
    for request in closed:
        finish_request_if_done(session, request, actor)
    return len(closed)


def certify_restored(
    session: Session,
    settings: Settings,
    model_id: uuid.UUID,
    job_id: uuid.UUID,
    outcome: FinetuneRetrainOutcome,
    actor: str,
) -> int:
    """The restore is published: each of the job's requests whose current certificate is the
    one issued at switch-off gets the final one, superseding it. Returns how many."""
    model = session.get_one(MlModel, model_id, with_for_update=True)
    issued = 0
    for action in jobs.actions_waiting_for(session, job_id):
        previous = current_certificate(session, action.request_id, model.id)
        if previous is None or (previous.body.get("slices") or {}).get("stage") != "switched_off":
            continue
        request = session.get_one(ErasureRequest, action.request_id)
        body = exact_certificate(
            request=request,
            model=model,
            slices=outcome,
            records_erased=records_erased(session, request.id, model.id),
            version_before=previous.body.get("version_after"),
            version_after=model.current_version,
            # The keys the switch-off destroyed, with their time: the final words name them.
            physical_deletion=carried_claim(settings, previous.body),
        )
        body["destroyed_artifacts"] = list(previous.body.get("destroyed_artifacts") or [])
        issue_certificate(session, action, model, with_hosts(session, body, model.id), actor)
        issued += 1
    return issued
