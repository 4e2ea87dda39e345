"""The (S, R) plan job: deterministic, blind to rows an erasure claimed, applied before training
when asked, and clear when there are no records."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models.sisa import (
    SisaConfig,
    assign_shard,
    assign_slice,
)
from service.core.config import get_settings
from service.core.security import subject_ref
from service.core.skip import Skip
from service.db.tables import MlModel, TrainingRecord
from service.exact.sisa_plan import load_plan
from service.queue.names import TASK_PLAN_SISA, TASK_PROCESS_REQUEST, TASK_TRAIN_MODEL
from tests.support.api import SentTasks, auth
from tests.support.exact import approve, model_body, register_and_ingest, trained_subject_of
from tests.support.sample_data import MODEL_BODY, synthetic_csv
from tests.support.tasks import drain

# The plan and training jobs run in process, on the test's session.
pytestmark = pytest.mark.usefixtures("task_factory")


CANDIDATES = [[1, 2], [2, 2], [3, 3]]


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
    subject = trained_subject_of(session, name)
    approve(app_client, tokens, subject, name)
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
    subject = trained_subject_of(session, name)
    approve(app_client, tokens, subject, name)
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
    register_and_ingest(app_client, h, model_body(name, shards=5, slices=5), synthetic_csv())
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
    app_client.post("/v1/models", json=model_body("empty"), headers=h)
    r = app_client.post("/v1/models/empty/plan", json={}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_training_records"
    r = app_client.post("/v1/models/empty/plan", json={"candidates": [[0, 4]]}, headers=h)
    assert r.status_code == 422
