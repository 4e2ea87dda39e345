"""A database-aware task base: one engine per worker process, a fresh session per unit of work."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from celery import Task
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.audit import lock_audit_chain
from service.audit.anchor import Anchor, anchored
from service.core.config import Settings, get_settings
from service.core.observability import correlation_id
from service.core.skip import Skip
from service.db.privileges import refuse_in_production
from service.db.session import bind_settings, database_url, session_factory
from service.jobs import lifecycle as jobs
from service.queue.client import send_task

log = logging.getLogger(__name__)

# Errors worth a retry: the database or broker blipped (a restart, a dropped connection), not
# our logic. The retry finds its job again: a redelivered task reclaims it (leases).
RETRYABLE = (ConnectionError, TimeoutError, OperationalError, psycopg.OperationalError)

_open = threading.local()


def open_transactions() -> int:
    """Units of work open in this thread: zero whenever a task trains or generates (the
    regression test for "never hold a transaction across ML work" reads it)."""
    return int(getattr(_open, "depth", 0))


class DbTask(Task):  # type: ignore[misc]
    abstract = True
    _factory: sessionmaker[Session] | None = None
    _anchor: Anchor | None = None
    # Tests inject a factory bound to their own connection.
    factory_override: sessionmaker[Session] | None = None

    @property
    def settings(self) -> Settings:
        return get_settings()

    @property
    def anchor(self) -> Anchor:
        """The audit-checkpoint signer (its key never reaches the database)."""
        if DbTask._anchor is None:
            DbTask._anchor = Anchor.from_settings(self.settings)
        return DbTask._anchor

    @property
    def factory(self) -> sessionmaker[Session]:
        if DbTask.factory_override is not None:
            return DbTask.factory_override
        if DbTask._factory is None:
            # Commits that append audit events are checkpointed (signed, outside the database).
            factory = anchored(session_factory(database_url(self.settings)), self.anchor)
            refuse_in_production(self.settings.environment, factory)
            DbTask._factory = factory
        return DbTask._factory

    @contextmanager
    def transaction(self, *, audited: bool = True) -> Iterator[Session]:
        """Short unit of work: commit on success. Never wrap training or inference in it.

        ``audited`` units may append audit events, so they take the chain's lock first (see
        lock_audit_chain); only units that never append one (progress heartbeats) skip it.
        """
        with self.factory() as session, session.begin():
            bind_settings(session, self.settings)
            _open.depth = open_transactions() + 1
            try:
                if audited:
                    lock_audit_chain(session)
                yield session
            finally:
                _open.depth = open_transactions() - 1


def db_task_options(max_retries: int = 5) -> dict[str, Any]:
    """Options every lethe task shares: a DB session per run, at-least-once delivery (so the
    task must be safe to run twice), and retries with backoff on connection errors only."""
    return {
        "base": DbTask,
        "bind": True,
        "acks_late": True,
        "autoretry_for": RETRYABLE,
        "retry_backoff": True,
        "max_retries": max_retries,
    }


def give_up_or_retry(task: DbTask, job_id: uuid.UUID, code: str, exc: BaseException | None) -> None:
    """An attempt failed: run the job again while attempts remain (an exception may be
    transient), or fail it for good (``exc`` None: retrying cannot help)."""
    # The exception's type only: messages could quote data.
    log.error("job %s failed: %s (%s)", job_id, code, type(exc).__name__ if exc else "-")
    with task.transaction() as session:
        jobs.retry_or_fail(
            session, task.settings, job_id, code, retryable=exc is not None, actor="worker"
        )


def correlation_headers() -> dict[str, str]:
    """Headers that carry this task's correlation id to the tasks it sends."""
    return {"correlation_id": correlation_id.get()}


def wait_turn(task: DbTask, job_id: str) -> str:
    """Another retrain holds the job's shard or model: send this task again after a pause and
    end this run. Not ``task.retry``: its countdown message would be reserved by whichever ML
    worker saw it first (service.queue.client), however busy that worker is."""
    send_task(
        task.settings,
        task.name,
        [job_id],
        countdown=jobs.RETRY_DELAY_S,
        headers=correlation_headers(),
    )
    return Skip.busy.value
