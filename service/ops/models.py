"""``lethe models …``: register, ingest, train, list and show models over the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from service.ops.client import EXIT_FAILED, EXIT_UNEXPECTED
from service.ops.output import api, emit_json, err, out, table, wait_for
from service.ops.requests import ApiUrl, AsJson

app = typer.Typer(help="Models (speaks to the API: LETHE_API_URL, LETHE_API_TOKEN).")


@app.command("register")
def register(
    name: str,
    config: Annotated[Path, typer.Option(help="JSON file: the kind's configuration")],
    kind: str = "sharded_classifier",
    policy: Annotated[Path | None, typer.Option(help="JSON file: the unlearning policy")] = None,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Register a model."""
    body: dict[str, Any] = {"name": name, "kind": kind, "config": json.loads(config.read_text())}
    if policy is not None:
        body["policy"] = json.loads(policy.read_text())
    with api(url) as client:
        model = client.post("/v1/models", body)
    emit_json(model) if as_json else out.print(f"registered {model['name']} ({model['kind']})")


@app.command("ingest")
def ingest(
    name: str,
    csv: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="training records")],
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Upload a model's training records (CSV with a header row)."""
    with api(url) as client, csv.open("rb") as handle:
        files = {"file": (csv.name, handle, "text/csv")}
        summary = client.request("POST", f"/v1/models/{name}/records", files=files).json()
    if as_json:
        emit_json(summary)
        return
    out.print(
        f"{summary['records']} records of {summary['subjects']} subjects "
        f"({summary['train_records']} train, {summary['holdout_records']} held out)"
    )


@app.command("train")
def train(
    name: str,
    wait: Annotated[bool, typer.Option(help="follow the training with a progress bar")] = False,
    timeout: float = 3600,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Start a model's training as a worker job."""
    with api(url) as client:
        job = client.post(f"/v1/models/{name}/train")
        if wait:
            job = wait_for(
                f"training {name}",
                lambda: client.get(f"/v1/jobs/{job['id']}"),
                lambda j: float(j["progress"]),
                lambda j: j["status"] in ("done", "failed"),
                timeout=timeout,
                show=not as_json,
            )
    emit_json(job) if as_json else out.print(f"job {job['id']}: {job['status']}")
    if wait and job["status"] == "failed":
        raise typer.Exit(EXIT_FAILED)


@app.command("list")
def list_models(url: ApiUrl = None, as_json: AsJson = False) -> None:
    """Registered models."""
    with api(url) as client:
        models = client.get("/v1/models")
    if as_json:
        emit_json(models)
        return
    table(
        f"{len(models)} model(s)",
        ["name", "kind", "status", "version"],
        [(m["name"], m["kind"], m["status"], m["current_version"]) for m in models],
    )


@app.command("show")
def show(name: str, url: ApiUrl = None, as_json: AsJson = False) -> None:
    """A model with its versions."""
    with api(url) as client:
        model = client.get(f"/v1/models/{name}")
        versions = client.get(f"/v1/models/{name}/versions")
    if as_json:
        emit_json({**model, "versions": versions})
        return
    out.print(f"[bold]{model['name']}[/bold] {model['kind']} status={model['status']}")
    table(
        "versions",
        ["number", "cause", "purged", "manifest"],
        [
            (v["number"], v["cause"], "yes" if v["purged"] else "", v["manifest_hash"][:16])
            for v in versions
        ],
    )


@app.command("plan")
def plan(
    name: str,
    run: Annotated[bool, typer.Option(help="start a plan job (a worker runs it) and wait")] = False,
    auto: Annotated[bool, typer.Option(help="apply the proposal if not trained yet")] = False,
    budget: Annotated[float, typer.Option(min=0, max=50, help="accuracy points")] = 1.0,
    se_margin: Annotated[float, typer.Option(min=0, max=5, help="gap + k·se ≤ budget")] = 0.0,
    erasure_rate: Annotated[float, typer.Option(min=1e-9, max=0.5)] = 0.001,
    max_records: Annotated[int, typer.Option(min=50, max=200_000)] = 20_000,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the job")] = 3600.0,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Print a model's (S, R) frontier and proposal (--run measures it first); for a model
    lethe fine-tunes, what keeping more slice orders costs and what it keeps on."""
    with api(url) as client:
        if run:
            body = {
                "budget_points": budget,
                "se_margin": se_margin,
                "erasure_rate": erasure_rate,
                "auto": auto,
                "max_records": max_records,
            }
            job = client.post(f"/v1/models/{name}/plan", body)
            job = wait_for(
                f"planning {name}",
                lambda: client.get(f"/v1/jobs/{job['id']}"),
                lambda j: float(j["progress"]),
                lambda j: j["status"] in ("done", "failed"),
                timeout=timeout,
                show=not as_json,
            )
            if job["status"] == "failed":
                err.print(f"plan job {job['id']}: failed ({job.get('error_code')})")
                raise typer.Exit(EXIT_FAILED)
        stored = client.get(f"/v1/models/{name}/plan")
    if as_json:
        emit_json(stored)
        return
    orders = stored.get("orders")
    if orders is not None:  # a fine-tune: its slice orders' trade-off
        typer.echo(format_orders(orders))
        return
    if stored["plan"] is None:
        err.print("no plan yet: run `lethe models plan NAME --run`")
        raise typer.Exit(EXIT_UNEXPECTED)
    typer.echo(format_plan(stored["plan"]))


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def format_plan(plan: dict[str, Any]) -> str:
    """The frontier as a table, then the proposal in words."""
    header = (
        f"{'S':>4} {'R':>4} {'accuracy':>9} {'gap (pts)':>10} {'± se':>6} {'speed-up':>9} "
        f"{'budget':>7}"
    )
    lines = [
        f"one model: accuracy {_number(plan['one_model_accuracy'], 4)} "
        f"({plan['training_records']} training / {plan['test_records']} test records, "
        f"budget {plan['budget_points']} points, {plan['requests_per_retrain']} request(s) "
        "per retrain)",
        header,
        "-" * len(header),
    ]
    chosen = (plan["chosen"]["shards"], plan["chosen"]["slices"])
    for point in plan["frontier"]:
        mark = " <" if (point["shards"], point["slices"]) == chosen else ""
        lines.append(
            f"{point['shards']:>4} {point['slices']:>4} {_number(point['accuracy'], 4):>9} "
            f"{_number(point['accuracy_gap_points'], 2):>10} "
            f"{_number(point.get('accuracy_gap_se_points'), 2):>6} "
            f"{_number(point['per_request_speedup'], 1) + 'x':>9} "
            f"{'yes' if point['within_budget'] else 'no':>7}{mark}"
        )
    verdict = "within the budget" if plan["within_budget"] else "NOT within the budget"
    lines.append(
        f"proposal: S={chosen[0]}, R={chosen[1]} ({verdict}); "
        + ("applied" if plan["applied"] else f"not applied: {plan['not_applied_because']}")
    )
    return "\n".join(lines)


def _megabytes(value: Any) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def format_orders(orders: dict[str, Any]) -> str:
    """A fine-tune's slice orders as a table (cost against parts kept), then in words."""
    slices, sizes = orders["slices"], orders["erasure_sizes"]
    kept = " ".join(f"{f'erase {k}':>9}" for k in sizes)
    header = f"{'orders':>6} {'checkpoints MB':>15} {'training s':>11} {kept}"
    lines = [
        f"{orders['subjects']} people in {slices} training stages; "
        f"{orders['orders_configured']} order(s) configured. After an erasure the model serves "
        "the order where those people were trained latest; the columns on the right are the "
        f"stages (of {slices}) it keeps on, on average.",
        header,
        "-" * len(header),
    ]
    for row in orders["rows"]:
        mark = " <" if row["orders"] == orders["orders_configured"] else ""
        stays = " ".join(f"{row['expected_slices_kept'][str(k)]:>9.2f}" for k in sizes)
        lines.append(
            f"{row['orders']:>6} {_megabytes(row['checkpoint_bytes']):>15} "
            f"{_number(row['training_seconds'], 1):>11} {stays}{mark}"
        )
    lines.append(_orders_in_words(orders))
    return "\n".join(lines)


def _orders_in_words(orders: dict[str, Any]) -> str:
    if not orders["measured"]:
        return "costs: not measured yet (the model has not been trained)."
    rows = {row["orders"]: row for row in orders["rows"]}
    one, most = rows[1], rows[max(rows)]
    if most is one:
        return "one training stage order is all this model can have."
    k = str(orders["erasure_sizes"][0])
    return (
        f"{most['orders']} orders cost {_megabytes(most['checkpoint_bytes'])} MB of checkpoints "
        f"and {_number(most['training_seconds'], 1)} s of training (one: "
        f"{_megabytes(one['checkpoint_bytes'])} MB, {_number(one['training_seconds'], 1)} s) "
        f"and keep {most['expected_slices_kept'][k]:.2f} of {orders['slices']} stages on after "
        f"erasing one person (one order: {one['expected_slices_kept'][k]:.2f})."
    )
