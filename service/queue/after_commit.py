"""Enqueue Celery work only after the transaction that created it has committed.

Sends are buffered on the session and flushed by an ``after_commit`` hook; a rollback drops
them, so a worker never sees an id whose row does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.observability import correlation_id
from service.queue.client import send_task

_KEY = "lethe_outbox"


@dataclass
class _Pending:
    settings: Settings
    sends: list[tuple[str, list[Any], float | None]] = field(default_factory=list)


def enqueue_after_commit(
    session: Session,
    settings: Settings,
    name: str,
    args: list[Any],
    countdown: float | None = None,
) -> None:
    pending: _Pending = session.info.setdefault(_KEY, _Pending(settings))
    pending.sends.append((name, args, countdown))


@event.listens_for(Session, "after_commit")
def _send_buffered(session: Session) -> None:
    pending: _Pending | None = session.info.pop(_KEY, None)
    if pending is None:
        return
    headers = {"correlation_id": correlation_id.get()}
    for name, args, countdown in pending.sends:
        send_task(pending.settings, name, args, countdown=countdown, headers=headers)


@event.listens_for(Session, "after_soft_rollback")
def _drop_buffered(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # only an outermost rollback drops the work
        session.info.pop(_KEY, None)
