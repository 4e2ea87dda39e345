"""Issue 12, service side: converging defaults with strict bounds, the too-small report,
placement at ingestion, the (S, R) plan job, and the public base in the certificate."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from torch import nn

from models.sisa import (
    DEFAULT_SLICES,
    PublicBase,
    SisaConfig,
    assign_shard,
    assign_slice,
    default_shards,
)
from models.tabular import FeatureSpec
from service.core.config import get_settings
from service.core.security import subject_ref
from service.core.skip import Skip
from service.db.tables import MlModel, TrainingRecord
from service.exact.sisa_plan import load_plan
from service.queue.names import TASK_PLAN_SISA, TASK_PROCESS_REQUEST, TASK_TRAIN_MODEL
from tests.conftest import SentTasks, auth
from tests.sample_data import MODEL_BODY, synthetic_csv
from tests.workers.conftest import drain

CANDIDATES = [[1, 2], [2, 2], [3, 3]]


def _body(name: str, **sisa: Any) -> dict[str, Any]:
    body = copy.deepcopy(MODEL_BODY)
    body["name"] = name
    body["config"]["sisa"].update(sisa)
    return body


def _register_and_ingest(
    client: TestClient, h: dict[str, str], body: dict[str, Any], data: bytes
) -> dict[str, Any]:
    r = client.post("/v1/models", json=body, headers=h)
    assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/models/{body['name']}/records",
        files={"file": ("d.csv", data, "text/csv")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def _approve(client: TestClient, tokens: dict[str, str], subject: str, model: str) -> str:
    h = auth(tokens["dpo"])
    rid = client.post(
        "/v1/requests",
        json={"subject_id": subject, "reason": "art 17", "scope": [model]},
        headers=h,
    ).json()["id"]
    assert client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=h).is_success
    return str(rid)


def _train_subject(session: Session, model: str) -> str:
    model_id = session.scalar(select(MlModel.id).where(MlModel.name == model))
    for i in range(80):
        subject = f"S-{i:04d}"
        ref = subject_ref(get_settings(), subject)
        if session.scalar(
            select(TrainingRecord.id).where(
                TrainingRecord.model_id == model_id,
                TrainingRecord.subject_ref == ref,
                TrainingRecord.split == "train",
            )
        ):
            return subject
    raise AssertionError("no subject in the train split")


@pytest.mark.parametrize(
    "sisa",
    [
        {"hidden": [0]},
        {"hidden": [5000]},
        {"seed": 2**32},
        {"seed": -1},
        {"validation_fraction": 0.5},
        {"aggregation": "median"},
        {"learning_rate": 0},
    ],
)
def test_sisa_settings_are_bounded(
    app_client: TestClient, tokens: dict[str, str], sisa: dict[str, Any]
) -> None:
    r = app_client.post(
        "/v1/models", json=_body("bad", **sisa), headers=auth(tokens["ml_engineer"])
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


def test_registry_defaults_are_the_librarys_converging_ones(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    body = {"name": "defaults", "config": {"subject_column": "c", "label_column": "y"}}
    r = app_client.post("/v1/models", json=body, headers=auth(tokens["ml_engineer"]))
    sisa = r.json()["config"]["sisa"]
    library = SisaConfig(shards=1, slices=1, input_dim=1, num_classes=2)
    for name in ("learning_rate", "batch_size", "validation_fraction", "patience", "max_rounds"):
        assert sisa[name] == getattr(library, name), name
    assert sisa["hidden"] == list(library.hidden)
    assert (sisa["shards"], sisa["slices"]) == (None, DEFAULT_SLICES)


def test_default_shards_follow_the_training_records_at_ingestion(
    app_client: TestClient, tokens: dict[str, str], session: Session
) -> None:
    """Left unset, S is chosen from the ingested training records and written back, so a small
    table is not cut into shards too small to learn from."""
    h = auth(tokens["ml_engineer"])
    body = {
        "name": "auto-shards",
        "config": {"subject_column": "customer_id", "label_column": "label"},
    }
    summary = _register_and_ingest(app_client, h, body, synthetic_csv(n_subjects=700))
    expected = default_shards(summary["train_records"])
    assert expected == summary["train_records"] // 500 >= 2
    config = app_client.get("/v1/models/auto-shards", headers=h).json()["config"]
    assert config["sisa"]["shards"] == config["sisa_config"]["shards"] == expected
    model_id = session.scalar(select(MlModel.id).where(MlModel.name == "auto-shards"))
    shards = session.scalars(
        select(TrainingRecord.shard).where(TrainingRecord.model_id == model_id).distinct()
    ).all()
    assert set(shards) == set(range(expected))


def test_shards_too_small_are_reported_not_published_silently(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks, session: Session
) -> None:
    h = auth(tokens["ml_engineer"])
    name = "too-many-shards"
    _register_and_ingest(app_client, h, _body(name, shards=12, slices=2), synthetic_csv())
    job = app_client.post(f"/v1/models/{name}/train", headers=h).json()
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "done")]
    result = app_client.get(f"/v1/jobs/{job['id']}", headers=h).json()["result"]
    assert result["schedule"] == "early_stopping"
    assert result["shards_too_small"] and result["warnings"]
    [version] = app_client.get(f"/v1/models/{name}/versions", headers=h).json()
    assert version["metrics"]["shards_too_small"] == result["shards_too_small"]

    subject = _train_subject(session, name)
    rid = _approve(app_client, tokens, subject, name)
    drain(sent_tasks)
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    [cert] = request["certificates"]
    [shard] = cert["body"]["shards_retrained"]
    assert shard["too_small"]
    assert cert["body"]["warnings"] and "WARNING" in cert["body"]["plain_words"]
    versions = app_client.get(f"/v1/models/{name}/versions", headers=h).json()
    assert str(shard["shard"]) in versions[-1]["metrics"]["shards_too_small"]


def _flagged_csv() -> bytes:
    lines = synthetic_csv().decode().splitlines()
    out = [lines[0] + ",vip_churn"]
    for line in lines[1:]:
        subject = line.split(",")[0]
        out.append(line + ("," + ("yes" if subject.endswith(("1", "7")) else "no")))
    return ("\n".join(out) + "\n").encode()


def test_placement_puts_flagged_subjects_in_the_tail_and_reports_the_fraction(
    app_client: TestClient, tokens: dict[str, str], session: Session
) -> None:
    body = _body("placed", slices=4)
    body["config"]["placement"] = {"flag_column": "vip_churn", "tail_slices": 1}
    summary = _register_and_ingest(app_client, auth(tokens["ml_engineer"]), body, _flagged_csv())
    fraction = summary["placement"]["expected_retrain_fraction"]
    assert fraction["with_placement"] < fraction["without_placement"]
    model = session.scalar(select(MlModel).where(MlModel.name == "placed"))
    assert model is not None
    assert model.config["placement_report"] == summary["placement"]
    assert "vip_churn" not in model.config["feature_spec"]["categorical"]
    rows = session.scalars(select(TrainingRecord).where(TrainingRecord.model_id == model.id)).all()
    assert any(r.likely_erased for r in rows) and not all(r.likely_erased for r in rows)
    for row in rows:
        assert (row.slice == 3) == row.likely_erased


def _plan(client: TestClient, h: dict[str, str], name: str, sent: SentTasks, **opts: Any) -> Any:
    r = client.post(
        f"/v1/models/{name}/plan",
        json={"candidates": CANDIDATES, "max_records": 400, **opts},
        headers=h,
    )
    assert r.status_code == 202, r.text
    assert drain(sent) == [(TASK_PLAN_SISA, "done")]
    job = client.get(f"/v1/jobs/{r.json()['id']}", headers=h).json()
    assert job["status"] == "done" and job["kind"] == "plan_sisa"
    return client.get(f"/v1/models/{name}/plan", headers=h).json()["plan"]


def test_plan_job_is_deterministic_and_never_reads_erased_rows(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    h = auth(tokens["ml_engineer"])
    name = MODEL_BODY["name"]
    subject = _train_subject(session, name)
    _approve(app_client, tokens, subject, name)
    # The request claims the subject's rows; its retrain has not run yet.
    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    from workers.tasks.requests import process_request

    process_request(*args)
    sent_tasks.sent.clear()
    claimed = set(
        session.scalars(
            select(TrainingRecord.record_key).where(TrainingRecord.erasure_request_id.is_not(None))
        )
    )
    assert claimed

    first = _plan(app_client, h, name, sent_tasks)
    assert [(p["shards"], p["slices"]) for p in first["frontier"]] == [tuple(c) for c in CANDIDATES]
    assert (first["chosen"]["shards"], first["chosen"]["slices"]) in {tuple(c) for c in CANDIDATES}
    assert first["applied"] is False  # the model trained already

    second = _plan(app_client, h, name, sent_tasks)
    assert second["frontier"] == first["frontier"] and second["chosen"] == first["chosen"]

    # The same plan as if the claimed rows had never existed, and the job's inputs hold none.
    session.execute(delete(TrainingRecord).where(TrainingRecord.record_key.in_(claimed)))
    session.flush()
    third = _plan(app_client, h, name, sent_tasks)
    assert third["frontier"] == first["frontier"]
    assert (
        first["training_records"] + first["test_records"]
        == third["training_records"] + (third["test_records"])
    )


def test_plan_job_loads_only_retained_rows(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    name = MODEL_BODY["name"]
    subject = _train_subject(session, name)
    _approve(app_client, tokens, subject, name)
    from workers.tasks.requests import process_request

    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    process_request(*args)
    sent_tasks.sent.clear()
    r = app_client.post(
        f"/v1/models/{name}/plan", json={}, headers=auth(tokens["ml_engineer"])
    ).json()
    inputs = load_plan(session, __import__("uuid").UUID(r["id"]))
    assert not isinstance(inputs, Skip)
    ref = subject_ref(get_settings(), subject)
    assert inputs.records and all(rec.subject_ref != ref for rec in inputs.records)
    claimed = session.scalars(
        select(TrainingRecord.record_key).where(TrainingRecord.erasure_request_id.is_not(None))
    ).all()
    assert claimed and not set(claimed) & {rec.key for rec in inputs.records}


def test_auto_plan_applies_the_chosen_shards_and_slices_before_training(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks, session: Session
) -> None:
    h = auth(tokens["ml_engineer"])
    name = "auto-planned"
    _register_and_ingest(app_client, h, _body(name, shards=5, slices=5), synthetic_csv())
    plan = _plan(app_client, h, name, sent_tasks, auto=True, se_margin=2.0)
    chosen = (plan["chosen"]["shards"], plan["chosen"]["slices"])
    assert plan["applied"] is True
    assert plan["options"]["se_margin"] == 2.0
    for point in plan["frontier"]:
        gap, se = point["accuracy_gap_points"], point["accuracy_gap_se_points"]
        assert point["within_budget"] == (se is not None and gap + 2.0 * se <= 1.0)
    model = session.scalar(select(MlModel).where(MlModel.name == name))
    assert model is not None
    session.refresh(model)
    config = SisaConfig.from_dict(model.config["sisa_config"])
    assert (config.shards, config.slices) == chosen
    assert (model.config["sisa"]["shards"], model.config["sisa"]["slices"]) == chosen
    for row in session.scalars(select(TrainingRecord).where(TrainingRecord.model_id == model.id)):
        assert row.shard == assign_shard(row.subject_ref, config)
        assert row.slice == assign_slice(row.record_key, config, likely_erased=row.likely_erased)
    app_client.post(f"/v1/models/{name}/train", headers=h)
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "done")]


def test_plan_needs_records_and_says_so_without_echoing(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    h = auth(tokens["ml_engineer"])
    app_client.post("/v1/models", json=_body("empty"), headers=h)
    r = app_client.post("/v1/models/empty/plan", json={}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_training_records"
    r = app_client.post("/v1/models/empty/plan", json={"candidates": [[0, 4]]}, headers=h)
    assert r.status_code == 422


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
    body = _body("based")
    body["config"]["public_base"] = {
        "path": str(path),
        "content_hash": content_hash,
        "name": "random-projection",
        "provenance": "random weights, seed 0; trained on nothing",
        "holds_subject_data": False,
    }
    _register_and_ingest(app_client, h, body, synthetic_csv())
    model = app_client.get("/v1/models/based", headers=h).json()
    assert model["config"]["sisa_config"]["base_hash"] == content_hash
    assert model["config"]["sisa_config"]["input_dim"] == 12
    app_client.post("/v1/models/based/train", headers=h)
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "done")]
    rows = [{"age": 40, "income": 3000.0, "region": "north"}]
    assert app_client.post("/v1/models/based/predict", json={"rows": rows}, headers=h).is_success

    rid = _approve(app_client, tokens, _train_subject(session, "based"), "based")
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
    body = _body("mismatch")
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
    body = _body("changed-base")
    body["config"]["public_base"] = {
        "path": str(path),
        "content_hash": content_hash,
        "name": "b",
        "provenance": "p",
        "holds_subject_data": False,
    }
    _register_and_ingest(app_client, h, body, synthetic_csv())
    loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        next(iter(loaded.parameters())).add_(1.0)
    torch.jit.save(loaded, str(tmp_path / "base.pt"))  # type: ignore[no-untyped-call]
    job = app_client.post("/v1/models/changed-base/train", headers=h).json()
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "failed")]
    job = app_client.get(f"/v1/jobs/{job['id']}", headers=h).json()
    assert job["status"] == "failed" and job["error_code"] == "public_base_mismatch"
    assert app_client.get("/v1/models/changed-base", headers=h).json()["status"] == "failed"
