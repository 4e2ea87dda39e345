"""Certifying after suppression: a worker that dies between the activation's commit and the
certificates leaves the rules in force and the actions running; the next run of the task (or
the reaper's resend) certifies each request once, without activating anything again, on the
version that serves its rules by then."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.audit.verify import verify_log
from service.core.config import Settings
from service.db.tables import AuditEvent, Certificate, RequestAction, RuleSetVersion
from service.queue.names import (
    TASK_CALIBRATE_BUDGET,
    TASK_PROCESS_REQUEST,
    TASK_UPDATE_VERIFIER_RULES,
)
from service.rules import certify
from service.rules.lost import resend_lost_activations
from tests.service.rules.test_activation import _forget, _model
from tests.support.api import SentTasks, auth


class WorkerDied(Exception):
    """Stands for a kill -9 right after the activation's commit (nothing after it runs)."""


def dies(*_args: Any, **_kwargs: Any) -> int:
    raise WorkerDied


def _approve(
    client: TestClient, dpo: dict[str, str], model: str, k: int, first: int = 0
) -> list[str]:
    rids = []
    for i in range(first, first + k):
        name = f"Subject {model} {i}"
        body: dict[str, Any] = {
            "subject_id": name,
            "reason": "art 17",
            "scope": [model],
            "forget": _forget(name, i),
        }
        rid = client.post("/v1/requests", headers=dpo, json=body).json()["id"]
        assert client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo)
        rids.append(rid)
    return rids


def _events(session: Session, action: str, rids: list[str]) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == action,
                AuditEvent.request_id.in_([uuid.UUID(r) for r in rids]),
            )
        )
        or 0
    )


def _certificates(session: Session, rids: list[str]) -> list[Certificate]:
    return list(
        session.scalars(
            select(Certificate).where(Certificate.request_id.in_([uuid.UUID(r) for r in rids]))
        )
    )


def test_a_run_that_died_after_suppression_is_certified_once_by_the_next(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    settings: Settings,
    task_factory: None,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    from workers.tasks.requests import process_request
    from workers.tasks.rules import update_verifier_rules

    ml, dpo = auth(tokens["ml_engineer"]), auth(tokens["dpo"])
    rids = _approve(app_client, dpo, _model(app_client, ml, tiny_lm, retain_file), 3)
    for args in sent_tasks.pop(TASK_PROCESS_REQUEST):
        assert process_request(*args) == "planned"
    first, *others = sent_tasks.pop(TASK_UPDATE_VERIFIER_RULES)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(certify, "certify_activation", dies)
        with pytest.raises(WorkerDied):
            update_verifier_rules(*first)

    # Suppressed: one active version holds every request's rules, named by one event; no
    # certificate yet, every action still running with the version that put it in force.
    session.expire_all()
    [row] = session.scalars(
        select(RuleSetVersion).where(RuleSetVersion.request_ids.contains(rids[:1]))
    ).all()
    assert row.status == "active" and sorted(row.request_ids) == sorted(rids)
    actions = session.scalars(
        select(RequestAction).where(RequestAction.request_id.in_([uuid.UUID(r) for r in rids]))
    ).all()
    assert {a.status for a in actions} == {"running"}
    assert {a.detail["rules_in_force"] for a in actions} == {str(row.id)}
    assert _certificates(session, rids) == [] and _events(session, "rules.activated", rids) == 0
    activated = select(AuditEvent).where(
        AuditEvent.action == "rules.version_activated", AuditEvent.target_id == str(row.model_id)
    )
    [event] = session.scalars(activated).all()
    assert sorted(event.details["requests_activated"]) == sorted(rids)
    # The reaper sees running actions no worker holds: it would send them again.
    assert resend_lost_activations(session, settings) == len(rids)

    # The redelivered task only certifies; the others' tasks find their action done.
    assert update_verifier_rules(*first) == "activated"
    assert {update_verifier_rules(*args) for args in others} == {"terminal"}
    session.expire_all()
    versions = select(RuleSetVersion).where(RuleSetVersion.model_id == row.model_id)
    assert [v.version for v in session.scalars(versions)] == [row.version]
    assert len(session.scalars(activated).all()) == 1
    certificates = _certificates(session, rids)
    assert sorted(str(c.request_id) for c in certificates) == sorted(rids)
    assert {c.body["rule_set_version"] for c in certificates} == {row.version}
    assert _events(session, "rules.activated", rids) == len(rids)
    for rid in rids:
        request = app_client.get(f"/v1/requests/{rid}", headers=dpo).json()
        assert request["status"] == "completed"
        assert request["actions"][0]["status"] == "done"
    assert verify_log(session, None).ok


def test_a_run_that_died_is_certified_on_the_version_that_serves_by_then(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    task_factory: None,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    """The worker dies after suppressing X; Y's activation supersedes X's version (the new one
    holds X's rules too) and its budget calibration ends before X's task runs again. X is then
    certified on the version serving its rules, with that version's final calibration, not
    left with an interim certificate naming a version no longer served."""
    from workers.tasks.requests import process_request
    from workers.tasks.rules import calibrate_budget_task, update_verifier_rules

    ml, dpo = auth(tokens["ml_engineer"]), auth(tokens["dpo"])
    model = _model(app_client, ml, tiny_lm, retain_file)

    [x] = _approve(app_client, dpo, model, 1)
    [planned] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    assert process_request(*planned) == "planned"
    [x_task] = sent_tasks.pop(TASK_UPDATE_VERIFIER_RULES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(certify, "certify_activation", dies)
        with pytest.raises(WorkerDied):
            update_verifier_rules(*x_task)

    [y] = _approve(app_client, dpo, model, 1, first=1)
    [planned] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    assert process_request(*planned) == "planned"
    [y_task] = sent_tasks.pop(TASK_UPDATE_VERIFIER_RULES)
    assert update_verifier_rules(*y_task) == "activated"
    [[serving_id]] = sent_tasks.pop(TASK_CALIBRATE_BUDGET)
    assert calibrate_budget_task(serving_id) == "calibrated"

    session.expire_all()
    serving = session.get_one(RuleSetVersion, uuid.UUID(serving_id))
    assert serving.status == "active" and sorted(serving.request_ids) == sorted([x, y])
    [superseded] = session.scalars(
        select(RuleSetVersion).where(
            RuleSetVersion.model_id == serving.model_id, RuleSetVersion.id != serving.id
        )
    ).all()
    assert superseded.status == "superseded" and superseded.request_ids == [x]
    # X's action still waits, naming the superseded version; the re-issue skipped it.
    assert _certificates(session, [x]) == []

    assert update_verifier_rules(*x_task) == "activated"
    # Nothing left to calibrate: the serving version's budget is done, the old one's moot.
    assert sent_tasks.pop(TASK_CALIBRATE_BUDGET) == []
    session.expire_all()
    [certificate] = _certificates(session, [x])
    assert certificate.body["rule_set_version"] == serving.version
    assert certificate.body["calibration_stage"] == "final"
    assert certificate.body["serving_budget"] == serving.calibration["serving_budget"]
    [event] = session.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "rules.activated", AuditEvent.request_id == uuid.UUID(x)
        )
    ).all()
    assert event.details["version"] == superseded.version
    assert event.details["now_served_by_version"] == serving.version
    request = app_client.get(f"/v1/requests/{x}", headers=dpo).json()
    assert request["status"] == "completed"
    assert request["actions"][0]["status"] == "done"
    assert verify_log(session, None).ok
