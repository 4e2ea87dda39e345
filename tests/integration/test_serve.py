"""`lethe serve` on the embedded default: it restarts the worker it started when that dies,
and SIGTERM stops the API, the worker and the embedded PostgreSQL. SIGTERM to `lethe demo`
(a cancelled CI job, a closed terminal) stops what it started, as Ctrl-C does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _celery_mains(serve: psutil.Process) -> list[int]:
    mains = []
    for p in serve.children():
        try:
            # A killed worker is a zombie until the supervisor reaps it: not a worker.
            if p.status() != psutil.STATUS_ZOMBIE and any("celery" in a for a in p.cmdline()):
                mains.append(p.pid)
        except psutil.Error:  # gone or a zombie between the two calls
            continue
    return mains


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's temp tree (see tests/conftest.py: the embedded server's own user).
    root = Path(tempfile.mkdtemp(prefix="lethe-serve-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_serve_supervises_its_worker_and_stops_everything_on_sigterm(data_dir: Path) -> None:
    from service.stack.processes import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(LETHE_DATA_DIR=str(data_dir), LETHE_ENVIRONMENT="test", PYTHONPATH=str(ROOT))
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success
            except httpx.HTTPError:
                assert serve.poll() is None, (data_dir / "serve.log").read_text()[-3000:]
                return False

        _wait(healthy, 180, "the API")
        parent = psutil.Process(serve.pid)
        _wait(lambda: len(_celery_mains(parent)) == 1, 60, "the worker")
        [first] = _celery_mains(parent)
        os.kill(first, signal.SIGKILL)
        _wait(lambda: _celery_mains(parent) not in ([], [first]), 60, "a restarted worker")
        assert healthy()
        postmaster = data_dir / "pgdata" / "postmaster.pid"
        assert postmaster.exists()
        workers = [psutil.Process(pid) for pid in _celery_mains(parent)]
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=120)
        assert not postmaster.exists(), "the embedded PostgreSQL is still running"
        alive = [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
        assert not alive, "the worker outlived lethe serve"
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        log.close()


def test_sigterm_stops_the_demo_and_everything_it_started(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(LETHE_ENVIRONMENT="test", PYTHONPATH=str(ROOT))
    log_path = data_dir / "demo.log"
    with open(log_path, "wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "demo", "--reports-dir", "reports"],
            cwd=data_dir,  # the demo keeps its data in ./.lethe/demo
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            parent = psutil.Process(demo.pid)
            postmaster = data_dir / ".lethe" / "demo" / "pgdata" / "postmaster.pid"

            def started() -> bool:
                assert demo.poll() is None, log_path.read_text()[-3000:]
                return postmaster.exists() and bool(_celery_mains(parent))

            _wait(started, 180, "the demo's database and worker")
            workers = [psutil.Process(pid) for pid in _celery_mains(parent)]
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
