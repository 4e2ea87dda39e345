"""Erasure requests over HTTP: filing and reading, decisions, bad bodies, unknown ids, timelines
and reports without the raw identifier, list filters and their bounds."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.api import auth, requests_and_events
from tests.support.sample_data import CANARY_SUBJECT

BODY = {"subject_id": CANARY_SUBJECT, "reason": "Art. 17 request"}


def test_file_and_read(app_client: TestClient, tokens: dict[str, str]) -> None:
    r = app_client.post("/v1/requests", json=BODY, headers=auth(tokens["dpo"]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "received" and body["subject_ref"].startswith("sub_")
    assert CANARY_SUBJECT not in r.text
    got = app_client.get(f"/v1/requests/{body['id']}", headers=auth(tokens["auditor"]))
    assert got.status_code == 200 and got.json()["id"] == body["id"]
    assert not got.json()["overdue"]


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
    before = requests_and_events(session)
    r = app_client.post("/v1/requests", json=body, headers=auth(tokens["dpo"]))
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == code
    assert CANARY_SUBJECT not in r.text and CANARY_SUBJECT.upper() not in r.text
    assert requests_and_events(session) == before


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


def test_offset_beyond_bigint_is_422(app_client: TestClient, tokens: dict[str, str]) -> None:
    r = app_client.get("/v1/requests", params={"offset": 2**63}, headers=auth(tokens["dpo"]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
