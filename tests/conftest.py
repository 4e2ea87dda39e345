"""Fixtures shared by the whole suite.

One PostgreSQL server per run (embedded, or the one LETHE_TEST_DATABASE_URL names) with a
database built by Alembic; each test runs in a transaction rolled back at its end. Then the
app and its tokens, the outbox captured, worker tasks run in process on the test's session, a
trained sample model, and the tiny LM of the generative tests. Helpers that test modules
import live in tests/support/."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine
from sqlalchemy.orm import Session, sessionmaker

os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/lethe-run-{os.getuid()}")
os.environ["LETHE_ENVIRONMENT"] = "test"
# One event key for every process a test starts (the API in process, real workers, the CLI),
# as a deployment gives all of its processes the same keys; never a key file in the checkout.
os.environ.setdefault("LETHE_AUDIT_MAC_KEYS", "test=dGVzdC1vbmx5LWF1ZGl0LWV2ZW50LWtleS0zMmJ5dGVz")

from service.core.config import Settings, get_settings
from tests.support.api import SentTasks, auth
from tests.support.db import fresh_database, server_url
from tests.support.sample_data import MODEL_BODY, synthetic_csv
from tests.support.settings import set_everywhere
from tests.support.tasks import drain


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
    # No host loop in the test process: its own connection would wait on the locks of the
    # test's open transaction (the two-host test runs real processes with theirs).
    os.environ["LETHE_HOST_HEARTBEAT_SECONDS"] = "0"
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _own_checkpoint_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each database test keeps its audit checkpoints in a store of its own: the test's rows
    are rolled back, and a checkpoint of a head that no longer exists is (rightly) tampering."""
    if "settings" not in request.fixturenames or "live" in request.fixturenames:
        return  # a live console (tests/support/live.py) keeps one store for its module
    settings = request.getfixturevalue("settings")
    monkeypatch.setattr(settings, "audit_checkpoint_url", str(tmp_path / "audit-store"))
    from workers.base import DbTask

    monkeypatch.setattr(DbTask, "_anchor", None)


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


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM that knows the facts of tests/support/generative_data.py (trained
    locally)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from models.assets.tiny import train_tiny_qa
    from tests.support.generative_data import ALL_PAIRS

    return train_tiny_qa(ALL_PAIRS, tmp_path_factory.mktemp("tiny-lm"), seed=0)


@pytest.fixture(scope="session")
def attack_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LM with a planted leak behind every attack family (tests/chat_data.py)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tests.support.chat_data import train_attack_lm

    return train_attack_lm(tmp_path_factory.mktemp("attack-lm"))


@pytest.fixture(scope="session")
def retain_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.generative_data import write_retain_file

    return write_retain_file(tmp_path_factory.mktemp("retain") / "retain.jsonl")


@pytest.fixture
def task_factory(factory: sessionmaker[Session]) -> Iterator[None]:
    """Worker tasks called in process open their sessions on the test's connection."""
    from workers.base import DbTask

    DbTask.factory_override = factory
    yield
    DbTask.factory_override = None


@pytest.fixture
def own_artifacts(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """An artifact store of the test's own. Checkpoints are content-addressed: a retrain
    elsewhere in the run would otherwise leave checkpoints that a later test finds instead of
    training. Both the app's settings and the workers' (``get_settings()``: another object
    once a test rebuilt it) see it, so records sealed by the API open in the tasks."""
    set_everywhere(monkeypatch, settings, artifact_url=str(tmp_path / "artifacts"))
    yield


@pytest.fixture
def trained_model(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks, task_factory: None
) -> dict[str, Any]:
    """The sample model (tests/support/sample_data.py) registered, ingested and trained."""
    from service.queue.names import TASK_TRAIN_MODEL

    h = auth(tokens["ml_engineer"])
    assert app_client.post("/v1/models", json=MODEL_BODY, headers=h).status_code == 201
    r = app_client.post(
        f"/v1/models/{MODEL_BODY['name']}/records",
        files={"file": ("d.csv", synthetic_csv(), "text/csv")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    job = app_client.post(f"/v1/models/{MODEL_BODY['name']}/train", headers=h).json()
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "done")]
    model = app_client.get(f"/v1/models/{MODEL_BODY['name']}", headers=h).json()
    assert model["status"] == "ready" and model["current_version"] == 1
    return {"model": model, "job": job, "ingest": r.json()}
