"""Body size limits: an oversized payload is a 413 that changes nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.api import auth, requests_and_events
from tests.support.sample_data import CANARY_SUBJECT

BODY = {"subject_id": CANARY_SUBJECT, "reason": "Art. 17 request"}


def test_oversized_payload(
    app_client: TestClient, tokens: dict[str, str], session: Session
) -> None:
    before = requests_and_events(session)
    r = app_client.post(
        "/v1/requests", json={**BODY, "reason": "x" * 200_000}, headers=auth(tokens["dpo"])
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert requests_and_events(session) == before
