"""The worker supervisor of `lethe serve` and `lethe demo` leaves no process behind: a Celery
worker forks pool children and an embedded beat, which outlive a worker that was killed, and
an orphaned beat beside a restarted one sends every scheduled task twice.

The supervised command here is a small Python process that forks a long-lived child (as the
worker forks beat) and records its pid, so the test needs no broker and runs in a second."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from service.stack.processes import _Supervisor

# Forks a child that sleeps (the "beat"), writes "<own pid> <child pid>" on its own line, and
# sleeps. SIGTERM ends the parent without passing it on, as a worker killed hard would.
FORKING_WORKER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(sys.argv[1], "a") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _pids(path: Path) -> list[tuple[int, int]]:
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(int(a), int(b)) for a, b in lines]


def test_stop_leaves_no_child_of_the_worker_behind(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    supervisor = _Supervisor([sys.executable, "-c", FORKING_WORKER, str(pids)], None)
    _wait_for(lambda: len(_pids(pids)) == 1)
    worker, child = _pids(pids)[0]
    assert _alive(worker) and _alive(child)

    supervisor.stop()

    _wait_for(lambda: not _alive(child), timeout=5)
    assert not _alive(worker)


def test_a_restarted_worker_does_not_run_beside_the_dead_ones_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    supervisor = _Supervisor([sys.executable, "-c", FORKING_WORKER, str(pids)], None)
    try:
        _wait_for(lambda: len(_pids(pids)) == 1)
        first_worker, first_child = _pids(pids)[0]

        os.kill(first_worker, signal.SIGKILL)

        # The supervisor starts a new worker (after a pause of a second) ...
        _wait_for(lambda: len(_pids(pids)) == 2)
        assert supervisor.restarts == 1
        second_worker, second_child = _pids(pids)[1]
        assert _alive(second_worker) and _alive(second_child)
        # ... and the first one's child was killed before it did.
        assert not _alive(first_child)
    finally:
        supervisor.stop()
    _wait_for(lambda: not _alive(second_child), timeout=5)
