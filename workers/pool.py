"""The worker's process pool: Celery's prefork pool, with queue locks that die with their holder.

Why: with a broker that has no event loop (kombu's SQLAlchemy transport, the embedded default)
Celery runs billiard's blocking pool, whose children share one task pipe guarded by a
process-shared semaphore. An idle child waits for its next task *holding* that semaphore, so a
kill -9 of an idle child left it held for ever: the replacement child, and every other child,
blocked on it and the worker ran nothing again (nor could it shut down warmly). The locks here
are POSIX record locks (fcntl), which the kernel releases when the holding process dies.
With Redis, Celery uses its asynchronous pool (one pipe per child, no shared lock); the
subclass changes nothing there.
"""

from __future__ import annotations

import fcntl
import tempfile
import threading
import time
from typing import Any

from billiard.pool import Pool as BlockingPool
from celery.concurrency.prefork import TaskPool as PreforkTaskPool

_POLL_S = 0.01


class DeathReleasedLock:
    """A lock between processes that is free again the moment its holder dies.

    A POSIX record lock belongs to a process, not a thread, so a thread lock is taken first
    to keep threads of one process apart too. Only ever used with fork (the pool's start
    method on Linux): the file descriptor is inherited, the lock itself is not.
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the pool
        self._threads = threading.Lock()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._threads.acquire(block, -1 if timeout is None else timeout):
            return False
        try:
            if block and deadline is None:
                fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX)
                return True
            while True:
                try:
                    fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except OSError:
                    if not block or (deadline is not None and time.monotonic() >= deadline):
                        self._threads.release()
                        return False
                    time.sleep(_POLL_S)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)
        self._threads.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *_: Any) -> None:
        self.release()


class _BlockingPool(BlockingPool):  # type: ignore[misc]
    def _setup_queues(self) -> None:
        super()._setup_queues()
        # Children read tasks under the in-queue's read lock (idle children wait holding it)
        # and write results under the out-queue's write lock.
        self._inqueue._rlock = DeathReleasedLock()
        self._outqueue._wlock = DeathReleasedLock()


class TaskPool(PreforkTaskPool):  # type: ignore[misc]
    """Selected by the app's ``worker_pool`` setting (workers.celery_app)."""

    BlockingPool = _BlockingPool


def forget_inherited_connections() -> None:
    """In a freshly forked pool child: drop the database connections the main process had open.

    kombu's SQLAlchemy transport caches its engines at class level, so a child forked from the
    main process would check the main process's own broker connection out of the inherited
    pool and talk over the same socket at the same time (seen as "current transaction is
    aborted" in the main process once a child had been killed mid-retrain). ``close=False``
    leaves the parent's connections open for the parent; psycopg never closes a connection
    from a process other than the one that opened it.
    """
    from kombu.transport.sqlalchemy import Channel

    from service.db.session import get_engine

    for engine, _ in list(Channel._engines.values()):
        engine.dispose(close=False)
    Channel._engines.clear()
    get_engine.cache_clear()
