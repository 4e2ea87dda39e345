"""The stuck-job reaper: jobs whose worker died are requeued, or failed when out of attempts."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from sqlalchemy import or_, select

from service.audit import append_event
from service.db.base import utcnow
from service.db.enums import JobStatus, RequestStatus
from service.db.tables import ErasureRequest, Job
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import (
    TASK_PROCESS_REQUEST,
    TASK_REAP_STUCK_JOBS,
    TASK_RETRAIN_SHARD,
    TASK_TRAIN_MODEL,
)
from workers.base import DbTask, db_task_options
from workers.tasks.training import mark_job_failed

log = logging.getLogger(__name__)
ACTOR = "reaper"


@shared_task(name=TASK_REAP_STUCK_JOBS, **db_task_options(max_retries=3))
def reap_stuck_jobs(self: DbTask) -> dict[str, int]:
    settings = self.settings
    cutoff = utcnow() - timedelta(seconds=settings.stale_job_seconds)
    requeued = failed = resent = 0
    with self.transaction() as session:
        stuck = session.scalars(
            select(Job)
            .where(
                Job.status == JobStatus.running,
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
            )
            .with_for_update(skip_locked=True)
        ).all()
        for job in stuck:
            if job.attempts >= settings.max_job_attempts:
                mark_job_failed(session, job, "worker_lost", ACTOR)
                failed += 1
                continue
            job.status = JobStatus.pending
            append_event(
                session,
                actor=ACTOR,
                action="job.reaped",
                target_type="job",
                target_id=str(job.id),
                details={
                    "kind": job.kind,
                    "shard": job.shard,
                    "attempts": job.attempts,
                    "stale_seconds": settings.stale_job_seconds,
                },
            )
            task = TASK_TRAIN_MODEL if job.shard < 0 else TASK_RETRAIN_SHARD
            enqueue_after_commit(session, settings, task, [str(job.id)])
            requeued += 1
        # Approved but never picked up (the message was lost): send it again.
        waiting = session.scalars(
            select(ErasureRequest.id).where(
                ErasureRequest.status == RequestStatus.approved,
                ErasureRequest.decided_at < cutoff,
            )
        ).all()
        for request_id in waiting:
            enqueue_after_commit(session, settings, TASK_PROCESS_REQUEST, [str(request_id)])
            resent += 1
    if requeued or failed or resent:
        log.warning("reaper: requeued=%d failed=%d resent=%d", requeued, failed, resent)
    return {"requeued": requeued, "failed": failed, "resent": resent}
