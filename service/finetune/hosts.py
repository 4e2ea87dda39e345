"""This host's part in deleting erased weights everywhere: a periodic loop (a thread of each
API process and of each worker's main process) that heartbeats, deletes the local copies named
by this host's purges and confirms them (retrying one that failed), marks silent hosts absent,
and drops merged folders whose checkpoint is gone. The database side is
service.erasure.host_purges."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from service.core.storage import drop_stale_merged
from service.db.base import utcnow
from service.db.session import database_url, session_factory, transaction
from service.erasure.host_purges import acknowledge, heartbeat, mark_absent
from service.rules.finetuned_serving import forget_generator

log = logging.getLogger(__name__)


def host_tick(settings: Settings, factory: sessionmaker[Session], role: str) -> dict[str, Any]:
    with transaction(factory) as session:
        me = heartbeat(session, settings, role)
        confirmed = acknowledge(session, settings, role, forget=forget_generator)
        absent = mark_absent(session, settings, role, utcnow())
    dropped = drop_stale_merged(settings)
    return {"host": me, "confirmed": confirmed, "absent": absent, "stale_dropped": len(dropped)}


class HostLoop:
    """``host_tick`` now and every ``host_heartbeat_seconds`` until stopped (0: not started)."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings, self.role = settings, role
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings.host_heartbeat_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lethe-host", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        factory = session_factory(database_url(self.settings))
        while not self._stop.is_set():
            try:
                host_tick(self.settings, factory, self.role)
            except Exception as exc:  # the next tick tries again; serving goes on
                log.warning("host heartbeat failed (%s)", type(exc).__name__)
            self._stop.wait(self.settings.host_heartbeat_seconds)
