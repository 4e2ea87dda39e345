"""How often the reaper may send the same work again.

A pending job, activation or approved request that nobody took within ``redispatch_seconds``
may have lost its message with a killed worker, so the reaper sends it again. But it may as
well be queued behind a retrain that runs for hours; re-sending it every reaper pass would
pile up hundreds of copies. Each re-send is recorded here, and the next one waits twice as
long as the last (``redispatch_seconds`` × 2^sends, at most ``MAX_BACKOFF_S``): a lost message
is still sent again within seconds, a queued one only a handful of times a day.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, func, literal
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from service.db.tables import Resend

MAX_BACKOFF_S = 3600.0
# Rows of work long finished are of no use; they are dropped after this long.
KEEP = timedelta(days=7)


def resend_due(
    session: Session, task: str, target_id: uuid.UUID, base_s: float, now: datetime
) -> bool:
    """True, and the re-send recorded, when ``task`` for ``target_id`` may be sent again now.

    One statement (insert or conditional update), so reapers running in several workers at
    once agree: only one of them gets True for a given re-send."""
    backoff = func.least(literal(base_s) * func.power(2, Resend.sends), MAX_BACKOFF_S)
    statement = (
        insert(Resend)
        .values(task=task, target_id=target_id, sends=1, last_sent_at=now)
        .on_conflict_do_update(
            index_elements=[Resend.task, Resend.target_id],
            set_={"sends": Resend.sends + 1, "last_sent_at": now},
            where=Resend.last_sent_at + func.make_interval(0, 0, 0, 0, 0, 0, backoff) <= now,
        )
        .returning(Resend.sends)
    )
    return session.execute(statement).scalar_one_or_none() is not None


def forget_old_resends(session: Session, now: datetime) -> int:
    result = session.execute(delete(Resend).where(Resend.last_sent_at < now - KEEP))
    return int(getattr(result, "rowcount", 0) or 0)
