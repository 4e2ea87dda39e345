"""The operator CLI's tests run it against a live API: uvicorn in a thread on a database of
its own (the API thread and the tasks commit for real), one per run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from service.core.config import Settings
from service.db.session import session_factory, transaction
from service.stack.processes import free_port, served
from tests.support.api import SentTasks
from tests.support.db import fresh_database


@pytest.fixture(scope="session")
def ops_db(pg_server: str) -> Iterator[str]:
    """A database of its own: the API thread and the tasks commit for real (a test's
    rolled-back connection cannot be shared with a server thread)."""
    with fresh_database(pg_server, prefix="lethe_ops") as url:
        yield url


@pytest.fixture(scope="session")
def live_api(settings: Settings, ops_db: str) -> Iterator[str]:
    from service.app.factory import create_app

    app = create_app(settings)
    app.state.session_factory = session_factory(ops_db)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    with served(config):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def tokens(ops_db: str) -> dict[str, str]:
    from service.api.tokens import create_token

    with transaction(session_factory(ops_db)) as s:
        return {
            role: create_token(s, f"ops-{role}-{uuid.uuid4().hex[:6]}", role, actor="test")
            for role in ("dpo", "ml_engineer", "auditor")
        }


@pytest.fixture(autouse=True)
def tasks_on_ops_db(ops_db: str) -> Iterator[None]:
    from workers.base import DbTask

    DbTask.factory_override = session_factory(ops_db)
    yield
    DbTask.factory_override = None


@pytest.fixture
def run(
    live_api: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sent_tasks: SentTasks
) -> Any:
    from service.cli import app

    monkeypatch.setenv("LETHE_API_URL", live_api)
    monkeypatch.setenv("LETHE_PROFILE", str(tmp_path / "no-profile.json"))
    runner = CliRunner()

    def invoke(token: str, *args: str, stdin: str | None = None) -> Any:
        monkeypatch.setenv("LETHE_API_TOKEN", token)
        return runner.invoke(app, list(args), input=stdin)

    return invoke
