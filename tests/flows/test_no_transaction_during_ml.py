"""No database transaction is open while a shard trains or a model generates.

Each ML entry point the tasks call is wrapped to record how many of the task's units of work
(``DbTask.transaction``) are open at that moment; it must be zero every time. The API's
generation path is checked the same way on its request session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.queue.names import TASK_CALIBRATE_BUDGET, TASK_RETRAIN_SHARD
from tests.support.api import SentTasks, auth
from tests.support.exact import a_trained_subject, file_and_approve
from tests.support.generative_data import FORGOTTEN, facts_of, forget_body, generative_model_body
from tests.support.tasks import drain


def _watch(monkeypatch: pytest.MonkeyPatch, target: str, seen: list[int]) -> None:
    from workers.base import open_transactions

    module_name, attr = target.rsplit(".", 1)
    module = __import__(module_name, fromlist=[attr])
    original: Callable[..., Any] = getattr(module, attr)

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(open_transactions())
        return original(*args, **kwargs)

    monkeypatch.setattr(module, attr, watched)


def test_no_transaction_open_while_training_or_retraining(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.support.sample_data import MODEL_BODY, synthetic_csv

    seen: list[int] = []
    _watch(monkeypatch, "service.exact.training.train_shard", seen)
    _watch(monkeypatch, "service.exact.retrain.unlearn_shard", seen)
    _watch(monkeypatch, "service.exact.retrain.verify_bit_exact", seen)
    h = auth(tokens["ml_engineer"])
    assert app_client.post("/v1/models", json=MODEL_BODY, headers=h).status_code == 201
    files = {"file": ("d.csv", synthetic_csv(), "text/csv")}
    assert (
        app_client.post(
            f"/v1/models/{MODEL_BODY['name']}/records", files=files, headers=h
        ).status_code
        == 201
    )
    app_client.post(f"/v1/models/{MODEL_BODY['name']}/train", headers=h)
    drain(sent_tasks)
    trained = len(seen)
    assert trained == MODEL_BODY["config"]["sisa"]["shards"]
    file_and_approve(app_client, tokens, a_trained_subject(session))
    ran = drain(sent_tasks)
    assert (TASK_RETRAIN_SHARD, "done") in ran
    assert len(seen) == trained + 2  # the retrain and its bit-exact check
    assert seen == [0] * len(seen)


def test_no_transaction_open_while_calibrating_or_generating(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    _watch(monkeypatch, "service.rules.activation.request_evidence", seen)
    _watch(monkeypatch, "service.rules.budget.refine", seen)
    _watch(monkeypatch, "service.rules.budget.model_leaks", seen)
    body = generative_model_body("bot", tiny_lm, retain_file)
    assert (
        app_client.post("/v1/models", json=body, headers=auth(tokens["ml_engineer"])).status_code
        == 201
    )
    dpo = auth(tokens["dpo"])
    rid = app_client.post(
        "/v1/requests",
        headers=dpo,
        json={
            "subject_id": FORGOTTEN,
            "reason": "art 17",
            "scope": ["bot"],
            "forget": forget_body(),
        },
    ).json()["id"]
    app_client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo)
    ran = drain(sent_tasks)
    assert (TASK_CALIBRATE_BUDGET, "calibrated") in ran
    assert seen and seen == [0] * len(seen)

    # The API: guarded generation runs after the request's session was closed.
    from service.rules import serving

    sessions_at_generation: list[bool] = []
    original = serving.refine

    def watched_refine(*args: Any, **kwargs: Any) -> Any:
        sessions_at_generation.append(serving_session_open[0].in_transaction())
        return original(*args, **kwargs)

    serving_session_open: list[Session] = []
    original_guarded = serving.guarded_generate

    def capture(settings: Any, session: Session, *args: Any, **kwargs: Any) -> Any:
        serving_session_open.append(session)
        return original_guarded(settings, session, *args, **kwargs)

    monkeypatch.setattr(serving, "refine", watched_refine)
    monkeypatch.setattr("service.api.routes_models.guarded_generate", capture)
    question, _ = facts_of(FORGOTTEN)[0]
    r = app_client.post(
        "/v1/models/bot/generate", json={"prompt": question}, headers=auth(tokens["ml_engineer"])
    )
    assert r.status_code == 200, r.text
    assert sessions_at_generation == [False]
