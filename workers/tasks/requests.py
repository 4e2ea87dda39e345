"""process_request: plan one action per model in scope and fan out the shard retrains."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit import append_event
from service.db.base import utcnow
from service.db.enums import (
    TERMINAL_REQUEST_STATUSES,
    ActionStatus,
    JobKind,
    JobStatus,
    ModelStatus,
    RequestStatus,
    Strategy,
)
from service.db.tables import (
    ActionJob,
    ErasureRequest,
    Job,
    MlModel,
    RequestAction,
    TrainingRecord,
)
from service.erasure.completion import finish_exact_action, finish_request_if_done
from service.erasure.filing import get_request
from service.erasure.lifecycle import check_transition
from service.erasure.planning import PlannedAction, models_in_scope, plan_model
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import (
    TASK_PROCESS_REQUEST,
    TASK_RETRAIN_SHARD,
    TASK_UPDATE_VERIFIER_RULES,
)
from workers.base import DbTask, db_task_options

log = logging.getLogger(__name__)
ACTOR = "worker"
# While a model is being trained its record set is in flux: plan again a little later.
TRAINING_RETRY_S = 15


@shared_task(name=TASK_PROCESS_REQUEST, **db_task_options(max_retries=10))
def process_request(self: DbTask, request_id: str) -> str:
    rid = uuid.UUID(request_id)
    with self.transaction() as session:
        request = get_request(session, rid, lock=True)
        if request.status in TERMINAL_REQUEST_STATUSES:
            return f"terminal:{request.status}"
        if request.status == RequestStatus.received:
            return "not_approved"
        models = models_in_scope(session, request)
        if any(m.status == ModelStatus.training for m in models):
            self.retry(countdown=TRAINING_RETRY_S, max_retries=240)
        if request.status == RequestStatus.approved:
            check_transition(request.status, RequestStatus.in_progress)
            request.status = RequestStatus.in_progress
            request.started_at = utcnow()
            append_event(
                session,
                actor=ACTOR,
                action="request.started",
                target_type="request",
                target_id=str(request.id),
                request_id=request.id,
                details={"models_in_scope": [m.name for m in models]},
            )
        existing = {
            a.model_id: a
            for a in session.scalars(
                select(RequestAction).where(RequestAction.request_id == request.id)
            )
        }
        for model in models:
            action = existing.get(model.id)
            if action is None:
                _plan_action(self, session, request, plan_model(session, request, model))
            elif action.status in (ActionStatus.pending, ActionStatus.running):
                _resend_pending_jobs(self, session, action)
        finish_request_if_done(session, request, ACTOR)
        return str(request.status)


def _plan_action(
    task: DbTask, session: Session, request: ErasureRequest, planned: PlannedAction
) -> None:
    model = planned.model
    action = RequestAction(
        id=uuid.uuid4(),
        request_id=request.id,
        model_id=model.id,
        strategy=planned.strategy or "exact_retrain",
        status=ActionStatus.pending,
        detail={"shards": list(planned.train_shards), "holdout_records": planned.holdout_records},
    )
    session.add(action)
    session.flush()
    if planned.strategy is None:
        action.status = ActionStatus.skipped
        action.finished_at = utcnow()
        append_event(
            session,
            actor=ACTOR,
            action="action.skipped",
            target_type="model",
            target_id=str(model.id),
            request_id=request.id,
            details={"model": model.name, "reason": "no_records_of_subject"},
        )
        return
    if planned.strategy == Strategy.verifier_rules:
        _audit_planned(session, request, planned, action)
        enqueue_after_commit(session, task.settings, TASK_UPDATE_VERIFIER_RULES, [str(action.id)])
        return
    # Mark the subject's rows: from now on no training of this model includes them.
    session.execute(
        update(TrainingRecord)
        .where(
            TrainingRecord.model_id == model.id,
            TrainingRecord.subject_ref == request.subject_ref,
            TrainingRecord.erasure_request_id.is_(None),
        )
        .values(erasure_request_id=request.id)
    )
    _audit_planned(session, request, planned, action)
    nothing_trained = _nothing_to_retrain(planned, model)
    if nothing_trained is not None:
        # Deleting the rows is the whole erasure: no model version ever learned from them.
        finish_exact_action(
            session,
            action,
            request,
            model,
            shards=[],
            version_before=model.current_version,
            version_after=model.current_version,
            actor=ACTOR,
            note=nothing_trained,
        )
        return
    action.status = ActionStatus.running
    for shard in planned.train_shards:
        job = _open_job(session, model, shard)
        session.add(ActionJob(action_id=action.id, job_id=job.id))
    session.flush()
    _resend_pending_jobs(task, session, action)


def _nothing_to_retrain(planned: PlannedAction, model: MlModel) -> str | None:
    """Why no shard needs retraining, or None when some does."""
    if not planned.train_shards:
        return (
            "The subject's records were held out for evaluation and never trained on; "
            "they were deleted and no shard needed retraining."
        )
    if model.current_version is None:
        return "The model had not been trained yet; the records were deleted before training."
    return None


def _audit_planned(
    session: Session, request: ErasureRequest, planned: PlannedAction, action: RequestAction
) -> None:
    append_event(
        session,
        actor=ACTOR,
        action="action.planned",
        target_type="model",
        target_id=str(planned.model.id),
        request_id=request.id,
        details={
            "model": planned.model.name,
            "strategy": action.strategy,
            "shards": list(planned.train_shards),
            "holdout_records": planned.holdout_records,
        },
    )


def _open_job(session: Session, model: MlModel, shard: int) -> Job:
    """Join a retrain of this shard that has not started yet (coalescing), or open one."""
    job = session.scalar(
        select(Job)
        .where(
            Job.model_id == model.id,
            Job.shard == shard,
            Job.kind == JobKind.retrain_shard,
            Job.status == JobStatus.pending,
        )
        .with_for_update()
        .limit(1)
    )
    if job is None:
        job = Job(
            id=uuid.uuid4(),
            kind=JobKind.retrain_shard,
            model_id=model.id,
            shard=shard,
            status=JobStatus.pending,
        )
        session.add(job)
        session.flush()
    return job


def _resend_pending_jobs(task: DbTask, session: Session, action: RequestAction) -> None:
    if action.strategy == Strategy.verifier_rules:
        # Safe to send twice: the task exits early once the action is done.
        enqueue_after_commit(session, task.settings, TASK_UPDATE_VERIFIER_RULES, [str(action.id)])
        return
    jobs = session.scalars(
        select(Job)
        .join(ActionJob, ActionJob.job_id == Job.id)
        .where(ActionJob.action_id == action.id, Job.status == JobStatus.pending)
    )
    for job in jobs:
        enqueue_after_commit(
            session,
            task.settings,
            TASK_RETRAIN_SHARD,
            [str(job.id)],
            countdown=task.settings.batching_window_seconds,
        )
