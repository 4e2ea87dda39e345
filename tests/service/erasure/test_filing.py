"""Filing: an idempotency key files a request once, and refuses another body under the same key."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.api import auth, requests_and_events
from tests.support.sample_data import CANARY_SUBJECT

BODY = {"subject_id": CANARY_SUBJECT, "reason": "Art. 17 request"}


def test_idempotent_filing(
    app_client: TestClient, tokens: dict[str, str], session: Session
) -> None:
    headers = {**auth(tokens["dpo"]), "idempotency-key": "k-1"}
    first = app_client.post("/v1/requests", json=BODY, headers=headers)
    before = requests_and_events(session)
    second = app_client.post("/v1/requests", json=BODY, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert requests_and_events(session) == before
    other = app_client.post("/v1/requests", json={**BODY, "reason": "different"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert requests_and_events(session) == before
