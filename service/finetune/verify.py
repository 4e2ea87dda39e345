"""The from-scratch check of a restored fine-tune, as its own job off the critical path.

The removal is already in force when it runs (the switched-off version, then the restored one,
serve): the check fine-tunes from scratch on the records the restore trained on and compares
every adapter and optimizer tensor. A match supersedes the restore's certificate with one that
says so; a mismatch says so too and re-opens the request's action, in the audit log and so in
the console. A killed check leaves its job running; the reaper sends it again and it re-runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy.orm import Session

from models.finetune import FinetuneConfig, FinetuneRecord, verify_bit_exact
from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.core.storage import artifact_store
from service.db.enums import JobKind, JobStatus
from service.db.tables import ActionJob, ErasureRequest, Job, MlModel
from service.erasure.certificates import (
    ExactRetrainCertificate,
    current_certificate,
    describe_exact,
    issue_certificate,
)
from service.erasure.host_purges import with_hosts
from service.erasure.lifecycle import reopen_action
from service.erasure.retrain_outcomes import (
    ExactnessResult,
    FinetuneExactness,
    FinetuneRetrainOutcome,
)
from service.finetune.records import load_records
from service.jobs import lifecycle as jobs
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_FINETUNE_VERIFY
from service.rules.finetuned_serving import served_version

CHECK_FAILED = "bit_exact_check_failed"


def open_verify(
    session: Session,
    settings: Settings,
    model_id: uuid.UUID,
    restore_job_id: uuid.UUID,
    outcome: FinetuneRetrainOutcome,
) -> Job:
    """A check job for the restore just published, serving the same actions; sent after
    commit."""
    job = Job(
        id=uuid.uuid4(),
        kind=JobKind.finetune_verify,
        model_id=model_id,
        shard=None,
        status=JobStatus.pending,
        result={
            "checkpoint": outcome.checkpoint_after,
            "retained_keys": list(outcome.retained_keys),
            "restore_job": str(restore_job_id),
        },
    )
    session.add(job)
    session.flush()
    for action in jobs.actions_waiting_for(session, restore_job_id):
        session.add(ActionJob(action_id=action.id, job_id=job.id))
    session.flush()
    enqueue_after_commit(session, settings, TASK_FINETUNE_VERIFY, [str(job.id)])
    return job


@dataclass(frozen=True)
class VerifyInputs:
    job_id: uuid.UUID
    model_id: uuid.UUID
    base_dir: Path
    config: FinetuneConfig
    base_id: str
    checkpoint: str
    records: list[FinetuneRecord]


def load_verify(session: Session, settings: Settings, job_id: uuid.UUID) -> VerifyInputs | Skip:
    """Claim the check and read the records the restore trained on; ``superseded`` when a
    later erasure took some of them (that erasure's own restore is checked instead)."""
    job = jobs.claim(session, job_id)
    if job is None:
        return Skip.not_claimed
    model = session.get_one(MlModel, job.model_id)
    keys = set(job.result["retained_keys"])
    records = [
        r for r in load_records(session, settings, model.id, include_claimed=True) if r.key in keys
    ]
    if len(records) != len(keys):
        jobs.finish(session, job, {**job.result, "skipped": Skip.superseded.value})
        return Skip.superseded
    served = served_version(session, model)
    return VerifyInputs(
        job_id=job.id,
        model_id=model.id,
        base_dir=Path(served.base_dir),
        config=served.config,
        base_id=served.base_id,
        checkpoint=str(job.result["checkpoint"]),
        records=records,
    )


def run_verify(settings: Settings, inputs: VerifyInputs) -> FinetuneExactness:
    """Fine-tune from scratch on the records and compare, tensor by tensor (no transaction)."""
    check, fresh = verify_bit_exact(
        inputs.base_dir,
        inputs.config,
        inputs.records,
        inputs.checkpoint,
        artifact_store(settings),
        base_id=inputs.base_id,
    )
    return FinetuneExactness(
        status=ExactnessResult.of(check.bit_exact),
        tensors_compared=check.tensors_compared,
        mismatched=tuple(check.mismatched[:20]),
        seconds=round(check.seconds, 4),
        full_finetune_seconds=round(fresh.result.seconds, 4),
    )


def record_verify(
    session: Session, inputs: VerifyInputs, exactness: FinetuneExactness, actor: str
) -> int | Skip:
    """Finish the check; supersede each action's restore certificate with its result, and
    re-open the action when it failed. Returns how many certificates were issued."""
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    model = session.get_one(MlModel, inputs.model_id, with_for_update=True)
    jobs.finish(session, job, {**job.result, "exactness": exactness.to_json()})
    append_event(
        session,
        actor=actor,
        action="model.exactness_checked",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "checkpoint": inputs.checkpoint,
            "job_id": str(job.id),
            "exactness": exactness.to_json(),
        },
    )
    issued = 0
    for action in jobs.actions_waiting_for(session, job.id):
        previous = current_certificate(session, action.request_id, model.id)
        slices = (previous.body.get("slices") or {}) if previous is not None else {}
        if previous is None or slices.get("checkpoint_after") != inputs.checkpoint:
            continue
        body = with_hosts(session, _checked(previous.body, exactness), model.id)
        issue_certificate(session, action, model, body, actor)
        issued += 1
        if exactness.status != ExactnessResult.bit_exact:
            request = session.get_one(ErasureRequest, action.request_id, with_for_update=True)
            reopen_action(
                session, action, request, CHECK_FAILED, actor=actor, model_name=model.name
            )
    return issued


def _checked(body: dict[str, Any], exactness: FinetuneExactness) -> ExactRetrainCertificate:
    checked = cast(ExactRetrainCertificate, dict(body))
    checked["slices"] = {**body["slices"], "exactness": exactness.to_json()}
    checked["determinism_check"] = exactness.status.value
    words = describe_exact(checked)
    destroyed = body.get("destroyed_artifacts") or []
    if destroyed:
        words += (
            f" {len(destroyed)} artifact(s) that had seen the records were destroyed (listed "
            "with their hashes and times)."
        )
    checked["plain_words"] = words
    return checked
