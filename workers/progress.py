"""Job progress and heartbeat, each written in its own tiny transaction (never across training)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from service.jobs import lifecycle as jobs
from workers.base import DbTask

# Writing more often than this would cost more than the training steps it reports.
MIN_INTERVAL_S = 1.0


def progress_reporter(task: DbTask, job_id: uuid.UUID) -> Callable[[float], None]:
    """A callback(fraction done) that records progress and the job's heartbeat, throttled."""
    last = 0.0

    def report(fraction: float) -> None:
        nonlocal last
        now = time.monotonic()
        if fraction < 1.0 and now - last < MIN_INTERVAL_S:
            return
        last = now
        with task.transaction(audited=False) as session:
            jobs.heartbeat(session, job_id, fraction)

    return report
