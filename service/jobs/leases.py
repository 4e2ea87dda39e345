"""Job leases: is the worker that holds a running job still alive?

A worker process that claims a job takes a session-level PostgreSQL advisory lock keyed by the
job's id, on a connection of its own that it keeps for its whole life. PostgreSQL releases the
lock the moment that connection ends, which is the moment the process dies (kill -9 included:
the kernel closes its socket). So "the holder is gone" is one ``pg_try_advisory_lock``: a
redelivered task or the reaper can take a dead holder's job back at once, without waiting for a
heartbeat to go stale, and can never take it from a holder that is alive.

If the lease connection itself drops while the process lives (a database restart), the process
takes its leases again on reconnecting; a lease someone else took meanwhile is lost, and the
holder then does not record its result (``holds`` is checked before recording).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_LEASE_APP = "lethe-lease"


def _key(job_id: uuid.UUID) -> int:
    """A signed 64-bit advisory-lock key from the job id (collisions are 2^-64 unlikely)."""
    return int.from_bytes(job_id.bytes[:8], "big", signed=True)


class Leases:
    """One lease connection per process (created lazily, again after a fork)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pid = -1
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._held: set[uuid.UUID] = set()
        self._mutex = threading.Lock()

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._pid != os.getpid():  # a forked child must not share its parent's socket
            self._conn, self._held, self._pid = None, set(), os.getpid()
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self._dsn, autocommit=True, application_name=_LEASE_APP, connect_timeout=10
            )
            lost = {j for j in self._held if not self._try(self._conn, j)}
            if lost:
                log.warning("job leases lost while disconnected: %d", len(lost))
            self._held -= lost
        return self._conn

    @staticmethod
    def _try(conn: psycopg.Connection[tuple[object, ...]], job_id: uuid.UUID) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_key(job_id),)).fetchone()
        return bool(row and row[0])

    def take(self, job_id: uuid.UUID) -> bool:
        """Take the lease; False when a live process holds it (this one included)."""
        with self._mutex:
            if job_id in self._held and self._pid == os.getpid():
                return False
            try:
                taken = self._try(self._connection(), job_id)
            except psycopg.OperationalError:
                self._conn = None
                taken = self._try(self._connection(), job_id)
            if taken:
                self._held.add(job_id)
            return taken

    def holds(self, job_id: uuid.UUID) -> bool:
        with self._mutex:
            try:
                self._connection()  # re-takes held leases after a reconnect
            except psycopg.OperationalError:
                return False
            return job_id in self._held

    def release(self, job_id: uuid.UUID) -> None:
        with self._mutex:
            if job_id not in self._held or self._pid != os.getpid():
                return
            self._held.discard(job_id)
            conn = self._conn
            if conn is not None and not conn.closed:
                try:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_key(job_id),))
                except psycopg.Error:
                    self._conn = None  # a new connection holds nothing

    def release_all(self) -> None:
        for job_id in list(self._held):
            self.release(job_id)


_registry: dict[str, Leases] = {}
_registry_lock = threading.Lock()


def release_all_leases() -> None:
    """A task ended, however it ended: whatever it held is no longer being worked on here (a
    worker process runs one task at a time), so a redelivery or the reaper may take it now."""
    with _registry_lock:
        registered = list(_registry.values())
    for leases in registered:
        try:
            leases.release_all()
        except psycopg.Error:
            log.warning("job leases not released (the connection is gone, and they with it)")


def leases_for(session: Session) -> Leases:
    """The process's leases on the database this session talks to."""
    url = session.get_bind().engine.url
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with _registry_lock:
        leases = _registry.get(dsn)
        if leases is None:
            leases = _registry[dsn] = Leases(dsn)
        return leases
