"""Decisions over the API: the legal ground, identity verification, a rejection code and a deadline
extension, each recorded in the request's report."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.sample_data import CANARY_SUBJECT


def test_api_records_ground_verification_code_and_extension(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    h = {"authorization": f"Bearer {tokens['dpo']}"}
    body = {
        "subject_id": CANARY_SUBJECT,
        "reason": "Art. 17",
        "legal_ground": "c",
        "identity_verification": {"method": "account_login", "reference": "session 5"},
    }
    filed = app_client.post("/v1/requests", json=body, headers=h).json()
    assert filed["legal_ground"] == "c" and filed["identity_verified_at"] is not None
    rid = filed["id"]
    ext = app_client.post(
        f"/v1/requests/{rid}/extend", json={"months": 1, "reason": "complex"}, headers=h
    )
    assert ext.status_code == 200 and ext.json()["extended_months"] == 1
    too_long = app_client.post(
        f"/v1/requests/{rid}/extend", json={"months": 2, "reason": "more"}, headers=h
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "extension_too_long"
    rej = app_client.post(
        f"/v1/requests/{rid}/reject", json={"reason": "x", "code": "legal_claims"}, headers=h
    )
    assert rej.json()["rejection_code"] == "legal_claims"
    report = app_client.get(f"/v1/requests/{rid}/report", headers=h).json()
    actions = [e["action"] for e in report["events"]]
    assert actions == [
        "request.received",
        "request.identity_verified",
        "request.deadline_extended",
        "request.rejected",
    ]
