"""Error rendering: input that cannot be read or is invalid gets a 4xx with a stable code, and the
answer never quotes it."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.api import SentTasks, auth, requests_and_events
from tests.support.sample_data import CANARY_SUBJECT


def test_malformed_json(app_client: TestClient, tokens: dict[str, str], session: Session) -> None:
    before = requests_and_events(session)
    r = app_client.post(
        "/v1/requests",
        content=b'{"subject_id": "' + CANARY_SUBJECT.encode(),
        headers={**auth(tokens["dpo"]), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert CANARY_SUBJECT not in r.text
    assert requests_and_events(session) == before


def test_nul_bytes_in_text_are_422_and_not_echoed(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    r = app_client.post(
        "/v1/requests",
        json={"subject_id": "nul-subject", "reason": "secret\x00reason"},
        headers=auth(tokens["dpo"]),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_value"
    assert "secret" not in r.text
    r = app_client.post(
        "/v1/tokens", json={"name": "a\x00b", "role": "dpo"}, headers=auth(tokens["admin"])
    )
    assert r.status_code == 422


def test_body_that_cannot_be_read_is_422(app_client: TestClient, tokens: dict[str, str]) -> None:
    # JSON that is not UTF-8: FastAPI's own 400 "error parsing the body" before.
    r = app_client.post(
        "/v1/requests",
        content=b'"\xff"',
        headers={**auth(tokens["dpo"]), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_body"


def test_scope_and_unknown_fields_are_not_echoed(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    body = {"subject_id": "s-1", "reason": "r", "scope": ["Jane Doe <jane@x.test>"]}
    r = app_client.post("/v1/requests", json=body, headers=auth(tokens["dpo"]))
    assert r.status_code == 422 and "Jane" not in r.text
    body = {"subject_id": "s-1", "reason": "r", "jane@x.test": 1}
    r = app_client.post("/v1/requests", json=body, headers=auth(tokens["dpo"]))
    assert r.status_code == 422 and "jane" not in r.text
    assert r.json()["error"]["details"] == [{"loc": ["body"], "type": "extra_forbidden"}]
