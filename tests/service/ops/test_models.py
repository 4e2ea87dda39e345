"""``lethe models …`` against a live API: register, ingest, train, list, show, and the (S, R) plan
printed as a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.ops import client as exits
from service.queue.names import TASK_PLAN_SISA
from tests.support.api import SentTasks, cli_json
from tests.support.sample_data import MODEL_BODY, synthetic_csv
from tests.support.tasks import drain


def test_models_commands(
    run: Any, tokens: dict[str, str], sent_tasks: SentTasks, tmp_path: Path
) -> None:
    ml = tokens["ml_engineer"]
    config = tmp_path / "config.json"
    config.write_text(json.dumps(MODEL_BODY["config"]))
    name = MODEL_BODY["name"]
    registered = cli_json(run(ml, "models", "register", name, "--config", str(config), "--json"))
    assert registered["status"] == "registered"
    data = tmp_path / "d.csv"
    data.write_bytes(synthetic_csv())
    assert cli_json(run(ml, "models", "ingest", name, "--csv", str(data), "--json"))["records"] > 0
    job = cli_json(run(ml, "models", "train", name, "--json"))
    assert job["status"] == "pending"
    drain(sent_tasks)
    model = cli_json(run(tokens["auditor"], "models", "show", name, "--json"))
    assert model["status"] == "ready" and [v["number"] for v in model["versions"]] == [1]
    assert name in [m["name"] for m in cli_json(run(ml, "models", "list", "--json"))]


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
    stored = cli_json(run(ml, "models", "plan", name, "--json"))
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
