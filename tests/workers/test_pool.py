"""workers.pool.DeathReleasedLock: a holder killed with kill -9 does not keep the lock."""

from __future__ import annotations

import os
import signal
import time

from workers.pool import DeathReleasedLock


def test_the_lock_is_free_again_once_its_holder_is_killed() -> None:
    lock = DeathReleasedLock()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the lock, say so, and hold it until killed
        lock.acquire()
        os.write(write, b"x")
        time.sleep(60)
        os._exit(0)
    assert os.read(read, 1) == b"x"
    try:
        assert not lock.acquire(timeout=0.2)  # held by a live process: excluded
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert lock.acquire(timeout=5)
    lock.release()
