"""A model's public base: its hash reaches the certificate, another hash is refused at ingestion,
and a base that changed fails the training job."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from torch import nn

from models.sisa import (
    PublicBase,
)
from models.tabular import FeatureSpec
from service.queue.names import TASK_TRAIN_MODEL
from tests.support.api import SentTasks, auth
from tests.support.exact import approve, model_body, register_and_ingest, trained_subject_of
from tests.support.sample_data import synthetic_csv
from tests.support.tasks import drain

# The training and retrain jobs run in process, on the test's session.
pytestmark = pytest.mark.usefixtures("task_factory")


def _public_base(tmp_path: Path) -> tuple[Path, str]:
    spec = FeatureSpec(("age", "income"), ("region",), knot_spacing=1.0)
    torch.manual_seed(0)
    network = torch.jit.script(nn.Sequential(nn.Linear(spec.input_dim, 12), nn.Tanh()))
    path = tmp_path / "base.pt"
    torch.jit.save(network, str(path))  # type: ignore[no-untyped-call]
    loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    return path, PublicBase(loaded, input_dim=spec.input_dim, name="b", provenance="p").content_hash


def test_public_base_hash_reaches_the_certificate(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    tmp_path: Path,
) -> None:
    h = auth(tokens["ml_engineer"])
    path, content_hash = _public_base(tmp_path)
    body = model_body("based")
    body["config"]["public_base"] = {
        "path": str(path),
        "content_hash": content_hash,
        "name": "random-projection",
        "provenance": "random weights, seed 0; trained on nothing",
        "holds_subject_data": False,
    }
    register_and_ingest(app_client, h, body, synthetic_csv())
    model = app_client.get("/v1/models/based", headers=h).json()
    assert model["config"]["sisa_config"]["base_hash"] == content_hash
    assert model["config"]["sisa_config"]["input_dim"] == 12
    app_client.post("/v1/models/based/train", headers=h)
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "done")]
    rows = [{"age": 40, "income": 3000.0, "region": "north"}]
    assert app_client.post("/v1/models/based/predict", json={"rows": rows}, headers=h).is_success

    rid = approve(app_client, tokens, trained_subject_of(session, "based"), "based")
    drain(sent_tasks)
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    [cert] = request["certificates"]
    assert cert["body"]["determinism_check"] == "bit_exact"
    base = cert["body"]["public_base"]
    assert base["content_hash"] == content_hash and base["holds_subject_data"] is False
    assert content_hash in cert["body"]["plain_words"]


def test_public_base_with_another_hash_is_refused(
    app_client: TestClient, tokens: dict[str, str], tmp_path: Path
) -> None:
    h = auth(tokens["ml_engineer"])
    path, _ = _public_base(tmp_path)
    body = model_body("mismatch")
    body["config"]["public_base"] = {
        "path": str(path),
        "content_hash": "0" * 64,
        "name": "b",
        "provenance": "p",
        "holds_subject_data": False,
    }
    assert app_client.post("/v1/models", json=body, headers=h).status_code == 201
    r = app_client.post(
        "/v1/models/mismatch/records",
        files={"file": ("d.csv", synthetic_csv(), "text/csv")},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "public_base_mismatch"
    assert str(path) not in r.text


def test_a_public_base_that_changes_fails_the_training_job(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    tmp_path: Path,
) -> None:
    h = auth(tokens["ml_engineer"])
    path, content_hash = _public_base(tmp_path)
    body = model_body("changed-base")
    body["config"]["public_base"] = {
        "path": str(path),
        "content_hash": content_hash,
        "name": "b",
        "provenance": "p",
        "holds_subject_data": False,
    }
    register_and_ingest(app_client, h, body, synthetic_csv())
    loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        next(iter(loaded.parameters())).add_(1.0)
    torch.jit.save(loaded, str(tmp_path / "base.pt"))  # type: ignore[no-untyped-call]
    job = app_client.post("/v1/models/changed-base/train", headers=h).json()
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "failed")]
    job = app_client.get(f"/v1/jobs/{job['id']}", headers=h).json()
    assert job["status"] == "failed" and job["error_code"] == "public_base_mismatch"
    assert app_client.get("/v1/models/changed-base", headers=h).json()["status"] == "failed"
