"""SIGTERM to `lethe demo` (a CI job cancelled, a terminal closed) stops the worker and the
embedded PostgreSQL it started, as Ctrl-C does, instead of leaving them running."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _celery_workers(demo: psutil.Process) -> list[psutil.Process]:
    found = []
    for p in demo.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any("celery" in a for a in p.cmdline()):
                found.append(p)
        except psutil.Error:  # gone between the two calls
            continue
    return found


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Outside pytest's temp tree (see tests/conftest.py: the embedded server's own user).
    root = Path(tempfile.mkdtemp(prefix="lethe-demo-stop-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_sigterm_stops_the_demo_and_everything_it_started(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(LETHE_ENVIRONMENT="test", PYTHONPATH=str(ROOT))
    log_path = workdir / "demo.log"
    with open(log_path, "wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "demo", "--reports-dir", "reports"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            parent = psutil.Process(demo.pid)
            postmaster = workdir / ".lethe" / "demo" / "pgdata" / "postmaster.pid"

            def started() -> bool:
                assert demo.poll() is None, log_path.read_text()[-3000:]
                return postmaster.exists() and bool(_celery_workers(parent))

            _wait(started, 180, "the demo's database and worker")
            workers = _celery_workers(parent)
            demo.send_signal(signal.SIGTERM)
            code = demo.wait(timeout=120)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
    output = log_path.read_text()
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert "its worker and database were stopped too" in output
    assert not postmaster.exists(), "the embedded PostgreSQL is still running"
    alive = [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert not alive, "the worker outlived lethe demo"
