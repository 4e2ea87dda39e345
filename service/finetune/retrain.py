"""Exact removal of subjects from a fine-tune (policy ``both``, the second action): plan the
job and load it (short transaction); ``switch_off`` removes at once and restores after."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.finetune import (
    FinetuneRecord,
)
from service.core.config import Settings
from service.core.skip import Skip
from service.db.base import utcnow
from service.db.enums import (
    TERMINAL_ACTION_STATUSES,
    ActionStatus,
    JobKind,
    JobStatus,
    Strategy,
)
from service.db.tables import ActionJob, Job, MlModel, RequestAction, TrainingRecord
from service.erasure.lifecycle import move_action
from service.erasure.retrain_outcomes import FinetuneRetrainOutcome, PublishedRetrain
from service.finetune.records import load_records
from service.jobs import lifecycle as jobs
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_FINETUNE_RETRAIN
from service.registry.config import GenerativePolicy
from service.rules.finetuned_serving import ServedVersion, served_version

# The exact job waits for the request's rules to be active first (suppress, then remove).
WAIT_FOR_RULES_S = 2.0


def open_exact(
    session: Session, settings: Settings, action: RequestAction, model: MlModel, actor: str
) -> None:
    """Start the exact action: due date, then join a retrain that has not started (requests
    that arrive together are erased by one retrain) or open one, sent after commit."""
    policy = GenerativePolicy.model_validate(model.policy)
    due = utcnow() + timedelta(days=policy.exact_deadline_days)
    action.detail = {**action.detail, "exact_due_at": due.isoformat()}
    move_action(session, action, ActionStatus.running, actor=actor, model_name=model.name)
    job = session.scalar(
        select(Job)
        .where(
            Job.model_id == model.id,
            Job.kind == JobKind.finetune_retrain,
            Job.status == JobStatus.pending,
        )
        .with_for_update()
        .limit(1)
    )
    if job is None:
        # shard 0: the one-running-retrain-per-shard index allows one running retrain per model.
        job = Job(
            id=uuid.uuid4(),
            kind=JobKind.finetune_retrain,
            model_id=model.id,
            shard=0,
            status=JobStatus.pending,
        )
        session.add(job)
        session.flush()
    session.add(ActionJob(action_id=action.id, job_id=job.id))
    session.flush()
    jobs.send_pending_jobs(session, settings, action)


@dataclass(frozen=True)
class ExactInputs:
    job_id: uuid.UUID
    model_id: uuid.UUID
    model_name: str
    served: ServedVersion
    records: list[FinetuneRecord]
    erase_subjects: list[str]
    request_ids: list[str]
    verify: bool
    switched: FinetuneRetrainOutcome | None = None
    """The switch-off an earlier run of this job published (its restore still to come)."""


def _unfinished(session: Session, job: Job) -> PublishedRetrain[FinetuneRetrainOutcome] | Skip:
    """A job no worker can claim: left to close if it published, else not ours."""
    if job.status != JobStatus.done or job.kind != JobKind.finetune_retrain:
        return Skip.not_claimed
    waiting = jobs.actions_waiting_for(session, job.id)
    if not any(a.status == ActionStatus.running for a in waiting):
        return Skip.not_claimed
    return PublishedRetrain(job.id, job.model_id, FinetuneRetrainOutcome.from_json(job.result))


def _rules_pending(session: Session, actions: list[RequestAction]) -> bool:
    for action in actions:
        rules = session.scalar(
            select(RequestAction.status).where(
                RequestAction.request_id == action.request_id,
                RequestAction.model_id == action.model_id,
                RequestAction.strategy == Strategy.verifier_rules,
            )
        )
        if rules is not None and rules not in TERMINAL_ACTION_STATUSES:
            return True
    return False


def _should_verify(policy: GenerativePolicy, job_id: uuid.UUID) -> bool:
    if policy.verify_exact == "sampled":
        draw = int(hashlib.sha256(job_id.bytes).hexdigest()[:8], 16) / 0xFFFFFFFF
        return draw < policy.verify_sample_rate
    return policy.verify_exact == "always"


def load_exact(
    session: Session, settings: Settings, job_id: uuid.UUID
) -> ExactInputs | PublishedRetrain[FinetuneRetrainOutcome] | Skip:
    """Claim the job and read the served version and records; a Skip says why not."""
    pending = session.get(Job, job_id)
    if pending is None:
        return Skip.not_claimed
    if pending.status != JobStatus.pending:
        return _unfinished(session, pending)
    if _rules_pending(session, jobs.actions_waiting_for(session, job_id)):
        enqueue_after_commit(
            session, settings, TASK_FINETUNE_RETRAIN, [str(job_id)], countdown=WAIT_FOR_RULES_S
        )
        return Skip.waiting_for_rules
    job = jobs.claim(session, job_id)
    if job is None:
        return Skip.not_claimed
    model = session.get_one(MlModel, job.model_id)
    actions = jobs.actions_waiting_for(session, job.id)
    request_ids = sorted(str(a.request_id) for a in actions)
    erase = session.scalars(
        select(TrainingRecord.subject_ref)
        .where(
            TrainingRecord.model_id == model.id,
            TrainingRecord.erasure_request_id.is_not(None),
            TrainingRecord.erased_at.is_(None),
        )
        .distinct()
    )
    return ExactInputs(
        job_id=job.id,
        model_id=model.id,
        model_name=model.name,
        served=served_version(session, model),
        records=load_records(session, settings, model.id, include_claimed=True),
        erase_subjects=sorted(erase),
        request_ids=request_ids,
        verify=_should_verify(GenerativePolicy.model_validate(model.policy), job.id),
        switched=_earlier_switch(job),
    )


def _earlier_switch(job: Job) -> FinetuneRetrainOutcome | None:
    result = job.result or {}
    if result.get("stage") != "switched_off":
        return None
    return FinetuneRetrainOutcome.from_json(result)
