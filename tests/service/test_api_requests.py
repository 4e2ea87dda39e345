"""Erasure requests over HTTP: filing, idempotency, decisions, roles, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.tables import AuditEvent, ErasureRequest
from service.queue.names import TASK_PROCESS_REQUEST
from tests.conftest import SentTasks, auth
from tests.sample_data import CANARY_SUBJECT

BODY = {"subject_id": CANARY_SUBJECT, "reason": "Art. 17 request"}


def _counts(session: Session) -> tuple[int, int]:
    return (
        session.scalar(select(func.count()).select_from(ErasureRequest)) or 0,
        session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
    )


def test_file_and_read(app_client: TestClient, tokens: dict[str, str]) -> None:
    r = app_client.post("/v1/requests", json=BODY, headers=auth(tokens["dpo"]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "received" and body["subject_ref"].startswith("sub_")
    assert CANARY_SUBJECT not in r.text
    got = app_client.get(f"/v1/requests/{body['id']}", headers=auth(tokens["auditor"]))
    assert got.status_code == 200 and got.json()["id"] == body["id"]
    assert not got.json()["overdue"]


def test_same_subject_spelled_differently_maps_to_one_reference(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    a = app_client.post("/v1/requests", json=BODY, headers=auth(tokens["dpo"])).json()
    b = app_client.post(
        "/v1/requests",
        json={**BODY, "subject_id": "  " + CANARY_SUBJECT.upper()},
        headers=auth(tokens["dpo"]),
    ).json()
    assert a["subject_ref"] == b["subject_ref"] and a["id"] != b["id"]


def test_idempotent_filing(
    app_client: TestClient, tokens: dict[str, str], session: Session
) -> None:
    headers = {**auth(tokens["dpo"]), "idempotency-key": "k-1"}
    first = app_client.post("/v1/requests", json=BODY, headers=headers)
    before = _counts(session)
    second = app_client.post("/v1/requests", json=BODY, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert _counts(session) == before
    other = app_client.post("/v1/requests", json={**BODY, "reason": "different"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert _counts(session) == before


def test_approve_sends_the_task_after_commit(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    rid = app_client.post("/v1/requests", json=BODY, headers=auth(tokens["dpo"])).json()["id"]
    assert sent_tasks.sent == []
    r = app_client.post(
        f"/v1/requests/{rid}/approve", json={"reason": "verified"}, headers=auth(tokens["dpo"])
    )
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert sent_tasks.pop(TASK_PROCESS_REQUEST) == [[rid]]


def test_failed_transaction_sends_nothing(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    rid = app_client.post("/v1/requests", json=BODY, headers=auth(tokens["dpo"])).json()["id"]
    app_client.post(
        f"/v1/requests/{rid}/reject", json={"reason": "no id"}, headers=auth(tokens["dpo"])
    )
    r = app_client.post(
        f"/v1/requests/{rid}/approve", json={"reason": "x"}, headers=auth(tokens["dpo"])
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    assert sent_tasks.sent == []


@pytest.mark.parametrize(
    ("first", "second", "second_status"),
    [
        ("reject", "approve", 409),
        ("cancel", "approve", 409),
        ("approve", "reject", 409),
        ("approve", "cancel", 200),
        ("reject", "cancel", 409),
        ("cancel", "reject", 409),
    ],
)
def test_decisions_over_http(
    app_client: TestClient, tokens: dict[str, str], first: str, second: str, second_status: int
) -> None:
    h = auth(tokens["dpo"])
    rid = app_client.post("/v1/requests", json=BODY, headers=h).json()["id"]
    assert (
        app_client.post(f"/v1/requests/{rid}/{first}", json={"reason": "r"}, headers=h).status_code
        == 200
    )
    r = app_client.post(f"/v1/requests/{rid}/{second}", json={"reason": "r"}, headers=h)
    assert r.status_code == second_status


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        ("post", "/v1/requests", None, 401),
        ("post", "/v1/requests", "bogus", 401),
        ("post", "/v1/requests", "auditor", 403),
        ("post", "/v1/requests", "ml_engineer", 403),
        ("get", "/v1/requests", None, 401),
        ("get", "/v1/audit/verify", "ml_engineer", 403),
        ("post", "/v1/models", "dpo", 403),
        ("post", "/v1/tokens", "dpo", 403),
    ],
)
def test_roles(
    app_client: TestClient,
    tokens: dict[str, str],
    method: str,
    path: str,
    role: str | None,
    status: int,
) -> None:
    headers = {} if role is None else auth(tokens.get(role, "lethe_not_a_token"))
    r = app_client.request(method, path, json=BODY, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] == ("unauthenticated" if status == 401 else "forbidden")


BAD_BODIES: list[tuple[Any, str]] = [
    ({**BODY, "scope": ["no-such-model"]}, "unknown_model"),
    ({**BODY, "unexpected": CANARY_SUBJECT}, "validation_error"),
    ({"reason": "x"}, "validation_error"),
    ({**BODY, "subject_id": ""}, "validation_error"),
    ({**BODY, "subject_id": CANARY_SUBJECT * 20}, "validation_error"),
    ({**BODY, "scope": []}, "validation_error"),
    ({**BODY, "subject_id": 12}, "validation_error"),
    ([CANARY_SUBJECT], "validation_error"),
]


@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
def test_bad_input_is_a_clear_4xx_that_changes_nothing(
    app_client: TestClient, tokens: dict[str, str], session: Session, body: Any, code: str
) -> None:
    before = _counts(session)
    r = app_client.post("/v1/requests", json=body, headers=auth(tokens["dpo"]))
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == code
    assert CANARY_SUBJECT not in r.text and CANARY_SUBJECT.upper() not in r.text
    assert _counts(session) == before


def test_malformed_json(app_client: TestClient, tokens: dict[str, str], session: Session) -> None:
    before = _counts(session)
    r = app_client.post(
        "/v1/requests",
        content=b'{"subject_id": "' + CANARY_SUBJECT.encode(),
        headers={**auth(tokens["dpo"]), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert CANARY_SUBJECT not in r.text
    assert _counts(session) == before


def test_oversized_payload(
    app_client: TestClient, tokens: dict[str, str], session: Session
) -> None:
    before = _counts(session)
    r = app_client.post(
        "/v1/requests", json={**BODY, "reason": "x" * 200_000}, headers=auth(tokens["dpo"])
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert _counts(session) == before


def test_unknown_request_and_bad_id(app_client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["dpo"])
    r = app_client.get("/v1/requests/00000000-0000-0000-0000-000000000000", headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
    r = app_client.get("/v1/requests/not-a-uuid", headers=h)
    assert r.status_code == 422


def test_timeline_and_reports_hold_no_raw_identifier(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    h = auth(tokens["dpo"])
    rid = app_client.post("/v1/requests", json=BODY, headers=h).json()["id"]
    app_client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=h)
    timeline = app_client.get(f"/v1/requests/{rid}/timeline", headers=h).json()
    assert [e["action"] for e in timeline] == ["request.received", "request.approved"]
    for fmt in ("json", "csv"):
        r = app_client.get(
            f"/v1/requests/{rid}/report", params={"format": fmt}, headers=auth(tokens["auditor"])
        )
        assert r.status_code == 200 and CANARY_SUBJECT not in r.text
    report = app_client.get(f"/v1/requests/{rid}/report", headers=h).json()
    assert report["summary"]["status"] == "approved" and report["chain"]["ok"]
    period = app_client.get("/v1/audit/export", params={"format": "csv"}, headers=h)
    assert period.status_code == 200 and period.text.startswith("seq,occurred_at")


def test_list_filters(app_client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["dpo"])
    rid = app_client.post("/v1/requests", json=BODY, headers=h).json()["id"]
    listed = app_client.get("/v1/requests", params={"status": "received"}, headers=h).json()
    assert rid in [i["id"] for i in listed["items"]]
    overdue = app_client.get("/v1/requests", params={"overdue": "true"}, headers=h).json()
    assert rid not in [i["id"] for i in overdue["items"]]
    bad = app_client.get("/v1/requests", params={"status": "nope"}, headers=h)
    assert bad.status_code == 422
