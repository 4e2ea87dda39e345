"""CSV ingestion: duplicate columns refused, the number of shards chosen from the records when left
unset, flagged subjects placed in the tail slices."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.sisa import (
    default_shards,
)
from service.db.tables import MlModel, TrainingRecord
from tests.support.api import SentTasks, auth
from tests.support.exact import model_body, register_and_ingest
from tests.support.sample_data import synthetic_csv


def test_duplicate_csv_header_is_422(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    h = auth(tokens["ml_engineer"])
    assert (
        app_client.post("/v1/models", json=model_body("contract-model"), headers=h).status_code
        == 201
    )
    lines = synthetic_csv(n_subjects=5).decode().splitlines()
    lines[0] += ",age"
    lines[1:] = [line + ",1" for line in lines[1:]]
    r = app_client.post(
        "/v1/models/contract-model/records",
        files={"file": ("d.csv", "\n".join(lines).encode(), "text/csv")},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_column"


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
    summary = register_and_ingest(app_client, h, body, synthetic_csv(n_subjects=700))
    expected = default_shards(summary["train_records"])
    assert expected == summary["train_records"] // 500 >= 2
    config = app_client.get("/v1/models/auto-shards", headers=h).json()["config"]
    assert config["sisa"]["shards"] == config["sisa_config"]["shards"] == expected
    model_id = session.scalar(select(MlModel.id).where(MlModel.name == "auto-shards"))
    shards = session.scalars(
        select(TrainingRecord.shard).where(TrainingRecord.model_id == model_id).distinct()
    ).all()
    assert set(shards) == set(range(expected))


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
    body = model_body("placed", slices=4)
    body["config"]["placement"] = {"flag_column": "vip_churn", "tail_slices": 1}
    summary = register_and_ingest(app_client, auth(tokens["ml_engineer"]), body, _flagged_csv())
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
