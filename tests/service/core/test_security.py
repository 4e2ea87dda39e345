"""Keyed subject references: one subject, however spelled, maps to one reference."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import auth
from tests.support.sample_data import CANARY_SUBJECT

BODY = {"subject_id": CANARY_SUBJECT, "reason": "Art. 17 request"}


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
