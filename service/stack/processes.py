"""Bringing up lethe's processes: database (embedded or configured), migrations, worker, API."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import uvicorn

from service.core.config import Settings, get_settings
from service.stack.embedded import EmbeddedPostgres
from service.stack.migrate import upgrade


@dataclass
class Stack:
    settings: Settings
    database_url: str
    api_url: str | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database, or an embedded one for the duration of the block."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    os.environ["LETHE_DATABASE_URL"] = embedded.url
    get_settings.cache_clear()
    try:
        yield embedded.url
    finally:
        embedded.stop()


log = logging.getLogger(__name__)
CELERY_APP = "workers.celery_app:celery_app"
API_MODULE = "service.app.factory"


def _celery(*args: str) -> list[str]:
    """Every Celery command line lethe runs is built here."""
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, *args]


def beat_command(schedule: Path) -> list[str]:
    return _celery("beat", "--schedule", str(schedule))


def worker_command(queues: str, concurrency: int, beat_schedule: Path | None) -> list[str]:
    cmd = [
        *_celery("worker"),
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    if beat_schedule is not None:
        cmd += ["--beat", "--schedule", str(beat_schedule)]
    return cmd


class _Supervisor:
    """Runs the worker command, and starts it again whenever it dies (with a growing pause
    while it keeps dying at once), until ``stop``.

    The worker runs in a process group of its own, because it is not one process: its pool
    children and the embedded beat outlive a worker that was killed (or that died), and a
    second beat after a restart would send every scheduled task twice. Whatever is left of a
    group is killed before a new worker starts, and when the supervisor stops."""

    def __init__(self, command: list[str], log_file: IO[bytes] | None) -> None:
        self.command = command
        self.log_file = log_file
        self.restarts = 0
        self._stopping = threading.Event()
        self.proc = self._start()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._thread.start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command,
            env=dict(os.environ),
            stdout=self.log_file or None,
            stderr=subprocess.STDOUT if self.log_file else None,
            start_new_session=True,
        )

    def _kill_leftovers(self) -> None:
        """SIGKILL what remains of the exited worker's process group (its pid is the group's
        id: ``start_new_session``). An empty group is gone already, which is fine."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _watch(self) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self.proc.wait()
            if self._stopping.is_set():
                return
            log.warning("worker exited with %s; starting it again", code)
            self._kill_leftovers()
            pause = 1.0 if time.monotonic() - started > 60 else min(pause * 2, 30.0)
            if self._stopping.wait(pause):
                return
            self.proc = self._start()
            self.restarts += 1

    def stop(self) -> None:
        self._stopping.set()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._kill_leftovers()
        self._thread.join(timeout=5)


@contextmanager
def worker_process(
    settings: Settings, *, concurrency: int = 2, log_path: Path | None = None
) -> Iterator[_Supervisor]:
    """A supervised worker (with the reaper's schedule) for the block's duration."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab") if log_path else None  # noqa: SIM115
    command = worker_command("requests,ml", concurrency, settings.data_dir / "celerybeat-schedule")
    supervisor = _Supervisor(command, log_file)
    try:
        yield supervisor
    finally:
        supervisor.stop()
        if log_file:
            log_file.close()


@contextmanager
def served(config: uvicorn.Config, timeout: float = 30) -> Iterator[uvicorn.Server]:
    """A uvicorn server in a background thread of this process for the block's duration:
    started (or ``RuntimeError``) before the block runs, stopped after it."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def api_server(host: str, port: int) -> Iterator[str]:
    """The API in a background thread of this process (uvicorn), for the demo."""
    config = uvicorn.Config(
        f"{API_MODULE}:create_app", factory=True, host=host, port=port, log_level="warning"
    )
    with served(config):
        yield f"http://{host}:{port}"


@contextmanager
def full_stack(
    settings: Settings, *, worker_log: Path | None = None, concurrency: int = 2
) -> Iterator[Stack]:
    # Importing the API (torch, transformers, every route) takes longer than starting the
    # database and migrating it: do it meanwhile, not after.
    threading.Thread(
        target=importlib.import_module, args=(API_MODULE,), name="api-import", daemon=True
    ).start()
    with database(settings) as url:
        upgrade(url)
        settings = get_settings()
        with (
            worker_process(settings, concurrency=concurrency, log_path=worker_log),
            api_server("127.0.0.1", free_port()) as api_url,
        ):
            yield Stack(settings, url, api_url)
