"""The reaper's pass over ML jobs: requeue jobs whose worker died or went silent (or fail them
when out of attempts), and re-send work no worker picked up. Runs on Celery beat's schedule."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.db.base import utcnow
from service.db.enums import JobStatus, RequestStatus
from service.db.tables import ErasureRequest, Job
from service.jobs.leases import leases_for
from service.jobs.lifecycle import fail, requeue, task_for
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_PROCESS_REQUEST
from service.queue.resends import resend_due

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapOutcome:
    requeued: int
    failed: int
    resent: int


def reap(session: Session, settings: Settings, actor: str) -> ReapOutcome:
    """Requeue running jobs whose worker died (lease free: at once) or went silent (heartbeat
    stale), or fail them when out of attempts; re-send pending jobs and approved requests that
    no worker picked up within ``redispatch_seconds`` (their message may have been lost with a
    worker; a duplicate is harmless: only one claim wins), backing off while they stay
    unclaimed (service.queue.resends)."""
    now = utcnow()
    requeued, failed = _reap_running(session, settings, actor, now)
    resent = _resend_pending_jobs(session, settings, now) + _resend_approved_requests(
        session, settings, now
    )
    if requeued or failed or resent:
        log.warning("reaper: requeued=%d failed=%d resent=%d", requeued, failed, resent)
    return ReapOutcome(requeued, failed, resent)


def _reap_running(
    session: Session, settings: Settings, actor: str, now: datetime
) -> tuple[int, int]:
    """Requeue (or fail) the running jobs whose holder is gone or silent: (requeued, failed)."""
    cutoff = now - timedelta(seconds=settings.stale_job_seconds)
    leases = leases_for(session)
    requeued = failed = 0
    running = session.scalars(
        select(Job).where(Job.status == JobStatus.running).with_for_update(skip_locked=True)
    ).all()
    for job in running:
        stale = job.heartbeat_at is None or job.heartbeat_at < cutoff
        if leases.holds(job.id) and not stale:
            continue  # this very process runs it
        holder_gone = leases.take(job.id)
        if not (holder_gone or stale):
            continue
        if job.attempts >= settings.max_job_attempts:
            fail(session, job, "worker_lost", actor)
            failed += 1
            continue
        append_event(
            session,
            actor=actor,
            action="job.reaped",
            target_type="job",
            target_id=str(job.id),
            details={
                "kind": job.kind.value,
                "shard": job.shard,
                "attempts": job.attempts,
                "reason": "holder_gone" if holder_gone else "heartbeat_stale",
            },
        )
        requeue(session, settings, job)
        requeued += 1
    return requeued, failed


def _resend_pending_jobs(session: Session, settings: Settings, now: datetime) -> int:
    # A new job is sent with the batching window as countdown: re-send only once that passed.
    redispatch = (
        now
        - timedelta(seconds=settings.redispatch_seconds)
        - timedelta(seconds=settings.batching_window_seconds)
    )
    pending = session.scalars(
        select(Job).where(
            Job.status == JobStatus.pending,
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < redispatch),
            Job.created_at < redispatch,
        )
    ).all()
    resent = 0
    for job in pending:
        if resend_due(session, task_for(job), job.id, settings.redispatch_seconds, now):
            enqueue_after_commit(session, settings, task_for(job), [str(job.id)])
            resent += 1
    return resent


def _resend_approved_requests(session: Session, settings: Settings, now: datetime) -> int:
    redispatch = now - timedelta(seconds=settings.redispatch_seconds)
    waiting = session.scalars(
        select(ErasureRequest.id).where(
            ErasureRequest.status == RequestStatus.approved,
            ErasureRequest.decided_at < redispatch,
        )
    ).all()
    resent = 0
    for request_id in waiting:
        if resend_due(session, TASK_PROCESS_REQUEST, request_id, settings.redispatch_seconds, now):
            enqueue_after_commit(session, settings, TASK_PROCESS_REQUEST, [str(request_id)])
            resent += 1
    return resent
