"""``lethe models …``: register, ingest, train, list and show models over the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from service.ops.client import EXIT_FAILED
from service.ops.output import api, emit_json, out, table, wait_for
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
