"""Task-layer tests: task functions called directly, on the test session, eager-free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.queue.names import (
    TASK_CALIBRATE_BUDGET,
    TASK_FINETUNE_MODEL,
    TASK_FINETUNE_RETRAIN,
    TASK_PLAN_SISA,
    TASK_PROCESS_REQUEST,
    TASK_RETRAIN_SHARD,
    TASK_TRAIN_MODEL,
    TASK_UPDATE_VERIFIER_RULES,
)
from tests.conftest import SentTasks, auth
from tests.sample_data import MODEL_BODY, synthetic_csv


@pytest.fixture(autouse=True)
def task_factory(factory: sessionmaker[Session]) -> Iterator[None]:
    from workers.base import DbTask

    DbTask.factory_override = factory
    yield
    DbTask.factory_override = None


def drain(sent: SentTasks) -> list[tuple[str, Any]]:
    """Run every task the outbox sent, as a worker would, until none is left."""
    from workers.tasks.exact import retrain_shard, train_model
    from workers.tasks.finetune import finetune_model, finetune_retrain
    from workers.tasks.planning import plan_sisa_task
    from workers.tasks.requests import process_request
    from workers.tasks.rules import calibrate_budget_task, update_verifier_rules

    tasks = {
        TASK_PROCESS_REQUEST: process_request,
        TASK_RETRAIN_SHARD: retrain_shard,
        TASK_TRAIN_MODEL: train_model,
        TASK_UPDATE_VERIFIER_RULES: update_verifier_rules,
        TASK_CALIBRATE_BUDGET: calibrate_budget_task,
        TASK_FINETUNE_MODEL: finetune_model,
        TASK_FINETUNE_RETRAIN: finetune_retrain,
        TASK_PLAN_SISA: plan_sisa_task,
    }
    ran = []
    while sent.sent:
        name, args, _ = sent.sent.pop(0)
        ran.append((name, tasks[name](*args)))
    return ran


@pytest.fixture
def trained_model(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> dict[str, Any]:
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
