"""A live lethe for the browser tests: its own database (real commits), uvicorn in a thread,
tasks captured from the outbox and run in process, every log line kept, Debian's chromium."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from service.db.session import session_factory
from service.stack.processes import free_port, served
from tests.support.api import SentTasks

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Live:
    url: str
    factory: sessionmaker[Session]
    log: io.StringIO
    sent: SentTasks = field(default_factory=SentTasks)

    def drain(self) -> list[tuple[str, Any]]:
        """Run every task the outbox sent, as a worker would (tests/support/tasks.py), on the
        live database."""
        from tests.support.tasks import drain
        from workers.base import DbTask

        previous, DbTask.factory_override = DbTask.factory_override, self.factory
        try:
            return drain(self.sent)
        finally:
            DbTask.factory_override = previous


def artifacts_dir() -> Path:
    root = Path(os.environ.get("LETHE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path = root / "console"
    path.mkdir(parents=True, exist_ok=True)
    return path


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        script = ROOT / "scripts" / "install-browser.sh"
        subprocess.run([str(script)], check=False, timeout=900)
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("chromium is not installed and scripts/install-browser.sh could not install it")
    return CHROMIUM


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the process while the live server runs: the root logger's and
    uvicorn's own (which an earlier in-process uvicorn.run may have set not to propagate)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    saved = [(root, root.level, root.propagate, root.disabled)]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    named = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.access", "uvicorn.error")]
    for logger in named:
        saved.append((logger, logger.level, logger.propagate, logger.disabled))
        logger.setLevel(logging.INFO)
        logger.disabled = False
        if not logger.propagate:
            logger.addHandler(handler)
    try:
        yield buffer
    finally:
        for logger, level, _propagate, disabled in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.disabled = disabled


@contextmanager
def live_lethe(settings: Settings, database_url: str, mp: pytest.MonkeyPatch) -> Iterator[Live]:
    from service.app.factory import create_app

    factory = session_factory(database_url)
    with captured_logs() as log:
        live = Live("", factory, log)

        def capture(
            _settings: Settings,
            name: str,
            args: list[Any],
            *,
            countdown: float | None = None,
            **_: Any,
        ) -> None:
            live.sent.sent.append((name, args, countdown))

        mp.setattr("service.queue.after_commit.send_task", capture)
        app = create_app(settings)
        app.state.session_factory = factory
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=True, log_level="info"
        )
        with served(config):
            live.url = f"http://localhost:{port}"
            yield live
