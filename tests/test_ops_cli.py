"""The operator CLI against a live API (uvicorn in a thread, on the test database): every
command, ``--json`` output parsed, and the exit codes of errors."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from service.core.config import Settings
from service.db.session import session_factory, transaction
from service.ops import client as exits
from service.queue.names import TASK_PLAN_SISA
from service.stack.processes import free_port
from tests.conftest import SentTasks
from tests.dbutil import fresh_database
from tests.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv
from tests.workers.conftest import drain


@pytest.fixture(scope="module")
def ops_db(pg_server: str) -> Iterator[str]:
    """A database of its own: the API thread and the tasks commit for real (a test's
    rolled-back connection cannot be shared with a server thread)."""
    with fresh_database(pg_server, prefix="lethe_ops") as url:
        yield url


@pytest.fixture(scope="module")
def live_api(settings: Settings, ops_db: str) -> Iterator[str]:
    from service.app.factory import create_app

    app = create_app(settings)
    app.state.session_factory = session_factory(ops_db)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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

    def invoke(token: str, *args: str) -> Any:
        monkeypatch.setenv("LETHE_API_TOKEN", token)
        return runner.invoke(app, list(args))

    return invoke


def _json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_requests_commands(run: Any, tokens: dict[str, str], sent_tasks: SentTasks) -> None:
    dpo, auditor = tokens["dpo"], tokens["auditor"]
    filed = _json(
        run(dpo, "requests", "file", "--subject", CANARY_SUBJECT, "--reason", "art 17", "--json")
    )
    assert filed["status"] == "received" and CANARY_SUBJECT not in json.dumps(filed)
    listed = _json(run(auditor, "requests", "list", "--status", "received", "--json"))
    assert filed["id"] in [r["id"] for r in listed["items"]]
    approved = _json(run(dpo, "requests", "approve", filed["id"], "--json"))
    assert approved["status"] == "approved"
    drain(sent_tasks)  # the worker's part: no model in scope, so the request completes
    shown = _json(run(auditor, "requests", "show", filed["id"], "--json"))
    assert shown["status"] == "completed"

    other = _json(run(dpo, "requests", "file", "--subject", "S-0009", "--reason", "r", "--json"))
    assert (
        _json(run(dpo, "requests", "cancel", other["id"], "--reason", "withdrawn", "--json"))[
            "status"
        ]
        == "cancelled"
    )
    again = run(dpo, "requests", "cancel", other["id"], "--reason", "twice")
    assert again.exit_code == exits.EXIT_CONFLICT and "invalid_transition" in again.output
    third = _json(run(dpo, "requests", "file", "--subject", "S-0010", "--reason", "r", "--json"))
    extended = run(
        dpo, "requests", "extend", third["id"], "--months", "1", "--reason", "complex", "--json"
    )
    assert _json(extended)["extended_months"] == 1
    assert run(dpo, "requests", "extend", third["id"], "--months", "3", "--reason", "x").exit_code
    rejected = run(
        dpo,
        "requests",
        "reject",
        third["id"],
        "--reason",
        "unfounded",
        "--code",
        "manifestly_unfounded",
        "--json",
    )
    assert _json(rejected)["status"] == "rejected"
    assert _json(rejected)["rejection_code"] == "manifestly_unfounded"


def test_export_writes_the_report(run: Any, tokens: dict[str, str], tmp_path: Path) -> None:
    filed = _json(
        run(tokens["dpo"], "requests", "file", "--subject", "S-1", "--reason", "r", "--json")
    )
    out = tmp_path / "r.csv"
    result = run(
        tokens["auditor"], "requests", "export", filed["id"], "--format", "csv", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("seq,occurred_at") and "request.received" in out.read_text()
    pdf = tmp_path / "r.pdf"
    result = run(
        tokens["auditor"], "requests", "export", filed["id"], "--format", "pdf", "--out", str(pdf)
    )
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes().startswith(b"%PDF")
    period = tmp_path / "audit.json"
    result = run(tokens["auditor"], "audit", "export", "--out", str(period))
    assert result.exit_code == 0, result.output
    assert json.loads(period.read_text())["requests_received"] >= 1


def test_models_commands(
    run: Any, tokens: dict[str, str], sent_tasks: SentTasks, tmp_path: Path
) -> None:
    ml = tokens["ml_engineer"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(MODEL_BODY["config"]))
    name = MODEL_BODY["name"]
    registered = _json(run(ml, "models", "register", name, "--config", str(config), "--json"))
    assert registered["status"] == "registered"
    data = tmp_path / "d.csv"
    data.write_bytes(synthetic_csv())
    assert _json(run(ml, "models", "ingest", name, "--csv", str(data), "--json"))["records"] > 0
    job = _json(run(ml, "models", "train", name, "--json"))
    assert job["status"] == "pending"
    drain(sent_tasks)
    model = _json(run(tokens["auditor"], "models", "show", name, "--json"))
    assert model["status"] == "ready" and [v["number"] for v in model["versions"]] == [1]
    assert name in [m["name"] for m in _json(run(ml, "models", "list", "--json"))]


def test_models_plan_prints_the_frontier_as_a_table(
    run: Any, tokens: dict[str, str], sent_tasks: SentTasks, live_api: str, tmp_path: Path
) -> None:
    ml = tokens["ml_engineer"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(MODEL_BODY["config"]))
    name = "cli-planned"
    assert run(ml, "models", "register", name, "--config", str(config)).exit_code == 0
    data = tmp_path / "d.csv"
    data.write_bytes(synthetic_csv())
    assert run(ml, "models", "ingest", name, "--csv", str(data)).exit_code == 0
    assert run(ml, "models", "plan", name).exit_code == exits.EXIT_UNEXPECTED  # no plan yet
    # --run starts the job over the API and waits; no worker runs here, so the wait runs out.
    waited = run(ml, "models", "plan", name, "--run", "--max-records", "400", "--timeout", "1")
    assert waited.exit_code == exits.EXIT_TIMEOUT, waited.output
    assert [name for name, _ in drain(sent_tasks)] == [TASK_PLAN_SISA]
    stored = _json(run(ml, "models", "plan", name, "--json"))
    assert stored["job_status"] == "done"
    plan = stored["plan"]
    result = run(ml, "models", "plan", name)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "± se" in lines[1]
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert [(int(r[0]), int(r[1])) for r in rows] == [
        (p["shards"], p["slices"]) for p in plan["frontier"]
    ]
    [marked] = [r for r in rows if r[-1] == "<"]
    assert (int(marked[0]), int(marked[1])) == (plan["chosen"]["shards"], plan["chosen"]["slices"])
    assert lines[-1].startswith(f"proposal: S={plan['chosen']['shards']}")
    unknown = run(ml, "models", "plan", "no-such-model")
    assert unknown.exit_code == exits.EXIT_NOT_FOUND and "model_not_found" in unknown.output


def test_exit_codes(run: Any, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("lethe_not-a-token", "requests", "list").exit_code == exits.EXIT_AUTH
    # An auditor may read but not file.
    denied = run(tokens["auditor"], "requests", "file", "--subject", "x", "--reason", "r")
    assert denied.exit_code == exits.EXIT_AUTH and "forbidden" in denied.output
    missing = run(tokens["dpo"], "requests", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.exit_code == exits.EXIT_NOT_FOUND
    bad = run(
        tokens["dpo"], "requests", "file", "--subject", "x", "--reason", "r", "--model", "nope"
    )
    assert bad.exit_code == exits.EXIT_INVALID and "nope" not in bad.output
    monkeypatch.setenv("LETHE_API_URL", f"http://127.0.0.1:{free_port()}")
    assert run(tokens["dpo"], "requests", "list").exit_code == exits.EXIT_UNAVAILABLE
