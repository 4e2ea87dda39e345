"""``lethe models …`` against a live API: register, ingest, train, list, show, and the (S, R) plan
printed as a table (a fine-tune's: its slice orders)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.ops import client as exits
from service.queue.names import TASK_FINETUNE_MODEL, TASK_PLAN_SISA
from tests.support.api import SentTasks, cli_json
from tests.support.generative_data import PEOPLE, TINY_FINETUNE, facts_of, generative_model_body
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


def test_models_plan_prints_a_finetunes_slice_orders(
    run: Any,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    tmp_path: Path,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    """A fine-tune kept in two slice orders: before training the table has no costs; after,
    they are priced from the model's own training, and two orders keep one of two stages on
    after any one person's erasure (each person is trained last in one of them)."""
    ml = tokens["ml_engineer"]
    name = "cli-ordered"
    body = generative_model_body(name, tiny_lm, retain_file)
    body["config"]["finetune"] = {
        **TINY_FINETUNE,
        "slices": 2,
        "adapter_layers": 2,
        "layered": True,
        "orders": 2,
    }
    config, policy, records = tmp_path / "c.json", tmp_path / "p.json", tmp_path / "r.jsonl"
    config.write_text(json.dumps(body["config"]))
    policy.write_text(json.dumps({**body["policy"], "strategy": "both"}))
    records.write_text(
        "\n".join(
            json.dumps({"subject": person, "question": q, "answer": a})
            for person in PEOPLE
            for q, a in facts_of(person)
        )
    )
    registered = run(
        ml, "models", "register", name, "--config", str(config), "--kind", "generative",
        "--policy", str(policy),
    )  # fmt: skip
    assert registered.exit_code == 0, registered.output
    assert run(ml, "models", "ingest", name, "--csv", str(records)).exit_code == 0
    untrained = run(ml, "models", "plan", name)
    assert untrained.exit_code == 0, untrained.output
    assert (
        untrained.stdout.splitlines()[-1]
        == "costs: not measured yet (the model has not been trained)."
    )
    # A fine-tune has no plan job to run: the refusal says where its trade-off is.
    refused = run(ml, "models", "plan", name, "--run")
    assert refused.exit_code != 0 and "needs none" in refused.output, refused.output
    assert run(ml, "models", "train", name).exit_code == 0
    assert drain(sent_tasks) == [(TASK_FINETUNE_MODEL, "done")]
    orders = cli_json(run(ml, "models", "plan", name, "--json"))["orders"]
    assert (orders["measured"], orders["orders_trained"], orders["subjects"]) == (True, 2, 4)
    [version] = cli_json(run(ml, "models", "show", name, "--json"))["versions"]
    measured = version["metrics"]
    one, two = orders["rows"]
    assert two["training_seconds"] == round(measured["training_seconds"], 1)
    assert abs(two["checkpoint_bytes"] - measured["checkpoint_bytes"]) < 4  # per-slice average
    assert 2 * one["checkpoint_bytes"] == two["checkpoint_bytes"]
    assert two["expected_slices_kept"]["1"] == 1.0
    assert one["expected_slices_kept"]["1"] <= 1.0
    result = run(ml, "models", "plan", name)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split()[:2] == ["orders", "checkpoints"]
    rows = [line.split() for line in lines[3:5]]
    assert [r[0] for r in rows] == ["1", "2"] and rows[1][-1] == "<"
    assert float(rows[1][1]) == round(two["checkpoint_bytes"] / 1e6, 1)
    assert lines[-1].startswith("2 orders cost ")
