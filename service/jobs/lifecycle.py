"""ML jobs (a model's training, one shard's retrain, a fine-tune's retrain, a plan): claim,
heartbeat, finish, fail, requeue. Every job status change is here (the reaper's pass is in
``service.jobs.reaper``); failing a job fails the actions waiting for it.

Jobs are claimed pending → running in a short transaction and heartbeat while they work. The
claiming process also takes the job's lease (service.jobs.leases), which PostgreSQL drops the
moment that process dies: a redelivered task whose job is still ``running`` but whose holder is
gone takes it over at once, and the reaper requeues it on its next run; a holder that is alive
but silent is requeued by the reaper once its heartbeat is stale (or failed when out of
attempts).
"""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings, get_settings
from service.db.base import utcnow
from service.db.enums import ActionStatus, JobKind, JobStatus, ModelStatus
from service.db.tables import ActionJob, ErasureRequest, Job, MlModel, RequestAction
from service.erasure.lifecycle import fail_action, finish_request_if_done
from service.jobs.leases import leases_for
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import (
    TASK_FINETUNE_MODEL,
    TASK_FINETUNE_RETRAIN,
    TASK_FINETUNE_VERIFY,
    TASK_PLAN_SISA,
    TASK_RETRAIN_SHARD,
    TASK_TRAIN_MODEL,
)

# Another retrain of the same shard is running, or a failed attempt is retried: wait this long.
RETRY_DELAY_S = 5
# A deletion of superseded artifacts that keeps failing is retried with a doubling delay up to
# this: never given up (the erased records live on in them until they are gone).
MAX_DESTROY_RETRY_S = 900


TASKS = {
    JobKind.train: TASK_TRAIN_MODEL,
    JobKind.retrain_shard: TASK_RETRAIN_SHARD,
    JobKind.finetune: TASK_FINETUNE_MODEL,
    JobKind.finetune_retrain: TASK_FINETUNE_RETRAIN,
    JobKind.plan_sisa: TASK_PLAN_SISA,
    JobKind.finetune_verify: TASK_FINETUNE_VERIFY,
}
# Jobs that train a whole model: failing one fails the model, not a request's action.
MODEL_TRAINING_JOBS = frozenset({JobKind.train, JobKind.finetune})


def task_for(job: Job) -> str:
    return TASKS[job.kind]


def claim(session: Session, job_id: uuid.UUID, actor: str = "worker") -> Job | None:
    """pending → running, or running → running again when its holder's process is gone; None
    when the job is finished or a live worker holds it.

    The flush makes the one-running-retrain-per-shard index fire here (IntegrityError).
    """
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status not in (JobStatus.pending, JobStatus.running):
        return None
    leases = leases_for(session)
    if not leases.take(job.id):
        return None  # a live process holds it
    if job.status == JobStatus.running:
        # Redelivered after its holder died (the lease was free): take it over now.
        if job.attempts >= get_settings().max_job_attempts:
            fail(session, job, "worker_lost", actor)
            return None
        append_event(
            session,
            actor=actor,
            action="job.reclaimed",
            target_type="job",
            target_id=str(job.id),
            details={"kind": job.kind.value, "shard": job.shard, "attempts": job.attempts},
        )
    job.status = JobStatus.running
    job.attempts += 1
    job.started_at = job.heartbeat_at = utcnow()
    job.progress = 0.0
    session.flush()
    return job


def heartbeat(session: Session, job_id: uuid.UUID, progress: float) -> None:
    """Progress and liveness in one statement (its own tiny transaction, never an audited one)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(progress=round(min(progress, 1.0), 4), heartbeat_at=utcnow())
    )


def running_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """The job, locked, if it is still ours to finish (the reaper or a redelivery may have taken
    it back, or our lease may have been lost while the database was away)."""
    job = session.get_one(Job, job_id, with_for_update=True)
    if job.status != JobStatus.running or not leases_for(session).holds(job_id):
        return None
    return job


def finish(session: Session, job: Job, result: dict[str, object]) -> None:
    job.status = JobStatus.done
    job.progress = 1.0
    job.finished_at = utcnow()
    job.result = result
    # Safe before commit: the row stays locked until then, so nobody sees it free and running.
    leases_for(session).release(job.id)


def requeue(
    session: Session, settings: Settings, job: Job, *, countdown: float | None = None
) -> None:
    """Back to pending and sent again after commit (checkpoints make the rerun cheap)."""
    job.status = JobStatus.pending
    leases_for(session).release(job.id)
    enqueue_after_commit(session, settings, task_for(job), [str(job.id)], countdown=countdown)


def open_retrain(session: Session, model_id: uuid.UUID, shard: int) -> Job:
    """Join a retrain of this shard that has not started yet (coalescing), or open one."""
    job = session.scalar(
        select(Job)
        .where(
            Job.model_id == model_id,
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
            model_id=model_id,
            shard=shard,
            status=JobStatus.pending,
        )
        session.add(job)
        session.flush()
    return job


def jobs_of_action(session: Session, action_id: uuid.UUID) -> list[Job]:
    return list(
        session.scalars(
            select(Job)
            .join(ActionJob, ActionJob.job_id == Job.id)
            .where(ActionJob.action_id == action_id)
            .order_by(Job.shard)
        )
    )


def actions_waiting_for(session: Session, job_id: uuid.UUID) -> list[RequestAction]:
    return list(
        session.scalars(
            select(RequestAction)
            .join(ActionJob, ActionJob.action_id == RequestAction.id)
            .where(ActionJob.job_id == job_id)
            .order_by(RequestAction.id)
            .with_for_update()
        )
    )


def send_pending_jobs(session: Session, settings: Settings, action: RequestAction) -> None:
    """(Re)send the action's jobs that no worker has claimed; safe to send twice."""
    for job in jobs_of_action(session, action.id):
        if job.status == JobStatus.pending:
            enqueue_after_commit(
                session,
                settings,
                task_for(job),
                [str(job.id)],
                countdown=settings.batching_window_seconds,
            )


def record_destroy_failure(session: Session, job_id: uuid.UUID, error: str, actor: str) -> float:
    """Deleting what a published retrain superseded failed (the store away, access revoked):
    count it on the job, say so in each waiting request's audit trail, and return the delay
    before the next attempt (doubling from RETRY_DELAY_S, at most MAX_DESTROY_RETRY_S). The
    certificates wait for the deletion, so the requests stay open, visibly, until it works.
    `error` is the exception's class name only: its message may name paths or keys."""
    job = session.get_one(Job, job_id, with_for_update=True)
    failures = int((job.result or {}).get("destroy_failures", 0)) + 1
    job.result = {**(job.result or {}), "destroy_failures": failures}
    delay = float(min(RETRY_DELAY_S * 2 ** min(failures - 1, 16), MAX_DESTROY_RETRY_S))
    model = session.get_one(MlModel, job.model_id)
    details = {
        "model": model.name,
        "job_id": str(job.id),
        "attempt": failures,
        "error": error,
        "retry_in_s": delay,
    }
    waiting = sorted({a.request_id for a in actions_waiting_for(session, job.id)})
    # A job nobody waits for any more (its requests cancelled) still records the failure.
    targets: list[uuid.UUID | None] = [*waiting] if waiting else [None]
    for request_id in targets:
        append_event(
            session,
            actor=actor,
            action="artifacts.deletion_failed",
            target_type="model",
            target_id=str(model.id),
            request_id=request_id,
            details=details,
        )
    return delay


def clear_destroy_failures(session: Session, job_id: uuid.UUID) -> None:
    """The deletion worked: the failed tries counted for it no longer hold anyone's request up
    (a fine-tune's action stays open after its switch-off for the restore, and the console must
    not keep saying the deletion has not worked). A later deletion of the same job counts, and
    backs off, from the start; the audit trail keeps every failure."""
    job = session.get_one(Job, job_id, with_for_update=True)
    if (job.result or {}).get("destroy_failures"):
        job.result = {**(job.result or {}), "destroy_failures": 0}


def retry_or_fail(
    session: Session,
    settings: Settings,
    job_id: uuid.UUID,
    code: str,
    *,
    retryable: bool,
    actor: str,
) -> None:
    """A job attempt ended in error: run it again while attempts remain, else fail it for good."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.status in (JobStatus.done, JobStatus.failed):
        return
    if retryable and job.attempts < settings.max_job_attempts:
        job.error_code = code
        requeue(session, settings, job, countdown=RETRY_DELAY_S)
        return
    fail(session, job, code, actor)


def fail(session: Session, job: Job, code: str, actor: str) -> None:
    """Fail the job, and with it the model's training or the actions waiting for it."""
    job.status = JobStatus.failed
    job.error_code = code
    job.finished_at = utcnow()
    leases_for(session).release(job.id)
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
            "kind": job.kind.value,
            "shard": job.shard,
            "error_code": code,
            "attempts": job.attempts,
        },
    )
    if job.kind in MODEL_TRAINING_JOBS:
        model.status = ModelStatus.failed
        return
    for action in actions_waiting_for(session, job.id):
        if action.status != ActionStatus.running:
            continue
        request = session.get_one(ErasureRequest, action.request_id, with_for_update=True)
        fail_action(session, action, request, code, actor=actor, model_name=model.name)
        finish_request_if_done(session, request, actor)
