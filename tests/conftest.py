"""Shared fixtures: a real PostgreSQL with the Alembic schema, rolled back per test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine
from sqlalchemy.orm import Session, sessionmaker

os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/lethe-run-{os.getuid()}")
os.environ["LETHE_ENVIRONMENT"] = "test"

from service.core.config import Settings, get_settings
from tests.dbutil import fresh_database, server_url


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    # Not under pytest's temp tree: pytest resets /tmp/pytest-of-<user> to mode 0700 when any
    # pytest run starts, which locks out the embedded server's own system user mid-run.
    root = Path(tempfile.mkdtemp(prefix="lethe-test-pg-"))
    try:
        with server_url(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    with fresh_database(pg_server) as url:
        yield url


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def settings(
    database_url: str, artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    os.environ["LETHE_DATABASE_URL"] = database_url
    # The audit signing key and checkpoints live in the data folder: never the checkout's.
    os.environ["LETHE_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    os.environ["LETHE_ARTIFACT_URL"] = str(artifact_dir)
    os.environ["LETHE_BROKER_URL"] = "memory://"
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def connection(settings: Settings, database_url: str) -> Iterator[Connection]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()
    engine.dispose()


@pytest.fixture
def factory(connection: Connection) -> sessionmaker[Session]:
    # Code under test commits; each commit becomes a savepoint inside the test's transaction.
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as s:
        yield s


@dataclass
class SentTasks:
    """What the outbox sent after commits (the API and tasks send by name, never import)."""

    sent: list[tuple[str, list[Any], float | None]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.sent]

    def pop(self, name: str) -> list[list[Any]]:
        matching = [args for n, args, _ in self.sent if n == name]
        self.sent = [s for s in self.sent if s[0] != name]
        return matching


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> SentTasks:
    record = SentTasks()

    def capture(
        _settings: Settings,
        name: str,
        args: list[Any],
        *,
        countdown: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        record.sent.append((name, args, countdown))

    monkeypatch.setattr("service.queue.after_commit.send_task", capture)
    return record


@pytest.fixture
def app_client(
    settings: Settings, factory: sessionmaker[Session], sent_tasks: SentTasks
) -> Iterator[TestClient]:
    from service.app.factory import create_app

    app = create_app(settings)
    app.state.session_factory = factory
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def tokens(factory: sessionmaker[Session]) -> dict[str, str]:
    from service.api.tokens import create_token

    with factory() as s, s.begin():
        return {
            role: create_token(s, f"test-{role}", role, actor="test")
            for role in ("dpo", "ml_engineer", "auditor", "admin")
        }


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM that knows the facts of tests/generative_data.py (trained locally)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from models.assets.tiny import train_tiny_qa
    from tests.generative_data import ALL_PAIRS

    return train_tiny_qa(ALL_PAIRS, tmp_path_factory.mktemp("tiny-lm"), seed=0)


@pytest.fixture(scope="session")
def attack_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LM with a planted leak behind every attack family (tests/chat_data.py)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tests.chat_data import train_attack_lm

    return train_attack_lm(tmp_path_factory.mktemp("attack-lm"))


@pytest.fixture(scope="session")
def retain_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.generative_data import write_retain_file

    return write_retain_file(tmp_path_factory.mktemp("retain") / "retain.jsonl")


def generative_model_body(name: str, model_dir: Path, retain: Path) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "generative",
        "config": {
            "model_dir": str(model_dir),
            "retain_qa_file": str(retain),
            "max_new_tokens": 24,
        },
        "policy": {
            "alpha": 0.1,
            "delta": 0.05,
            "alpha_b": 0.2,
            "max_budget": 3,
            "max_probes": 12,
            "budget_probes": 6,
            "max_budget_probes": 12,
        },
    }
