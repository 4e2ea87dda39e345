"""Job progress and heartbeat, each written in its own tiny transaction (never across training)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy import update

from service.db.base import utcnow
from service.db.tables import Job
from workers.base import DbTask

# Writing more often than this would cost more than the training steps it reports.
MIN_INTERVAL_S = 1.0


def progress_reporter(
    task: DbTask, job_id: uuid.UUID, start: float = 0.0, span: float = 1.0
) -> Callable[[int, int], None]:
    """A callback(done, total) mapping onto [start, start + span] of the job's progress."""
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < MIN_INTERVAL_S:
            return
        last = now
        fraction = start + span * (done / total if total else 1.0)
        with task.transaction(audited=False) as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(progress=round(min(fraction, 1.0), 4), heartbeat_at=utcnow())
            )

    return report
