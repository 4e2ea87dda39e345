"""Readiness: can this API do its job right now? Database, broker, and a live worker.

A worker announces itself by keeping one idle database connection open whose
``application_name`` starts with ``lethe-worker``. PostgreSQL drops that connection the moment
the worker process dies (kill -9 included: the kernel closes its socket), so "is a worker alive"
is a query on ``pg_stat_activity`` with no table, no clock and no stale window.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings

log = logging.getLogger(__name__)

WORKER_APP_PREFIX = "lethe-worker"
_PRESENCE_PING_S = 15.0


def libpq_dsn(database_url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://...) as a libpq connection string."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def announce_worker(database_url: str, worker_name: str) -> threading.Thread:
    """Keep a presence connection open for as long as this process lives (daemon thread)."""
    name = f"{WORKER_APP_PREFIX}:{worker_name or socket.gethostname()}"[:63]

    def hold() -> None:
        while True:
            try:
                with psycopg.connect(
                    libpq_dsn(database_url), application_name=name, autocommit=True
                ) as conn:
                    while True:
                        conn.execute("SELECT 1")
                        time.sleep(_PRESENCE_PING_S)
            except psycopg.Error as exc:
                log.warning("worker presence connection lost: %s", type(exc).__name__)
                time.sleep(2)

    thread = threading.Thread(target=hold, name="lethe-worker-presence", daemon=True)
    thread.start()
    return thread


def live_workers(session: Session) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(text("pg_stat_activity"))
        .where(text("application_name LIKE :prefix").bindparams(prefix=f"{WORKER_APP_PREFIX}:%"))
    )
    return int(count or 0)


def _broker_ok(settings: Settings) -> bool:
    if settings.broker_url is None:
        return True  # the database is the broker: checked above
    from kombu import Connection  # type: ignore[attr-defined]

    try:
        with Connection(settings.broker_url, connect_timeout=2) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # any transport's failure means "not ready"
        log.warning("broker not reachable: %s", type(exc).__name__)
        return False
    return True


def readiness(settings: Settings, factory: sessionmaker[Session]) -> dict[str, Any]:
    checks: dict[str, Any] = {"database": False, "broker": False, "workers": 0}
    try:
        with factory() as session:
            session.execute(text("SET LOCAL statement_timeout = 2000"))
            session.execute(text("SELECT 1"))
            checks["database"] = True
            checks["workers"] = live_workers(session)
    except Exception as exc:  # not ready, whatever the reason; the reason's type is logged
        log.warning("database not ready: %s", type(exc).__name__)
    checks["broker"] = checks["database"] and _broker_ok(settings)
    checks["ready"] = bool(checks["database"] and checks["broker"] and checks["workers"] > 0)
    return checks
