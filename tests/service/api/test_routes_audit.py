"""Audit routes: export bounds are ISO 8601 timestamps."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import auth


def test_export_bounds_are_iso_8601(app_client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["auditor"])
    assert app_client.get("/v1/audit/export?since=0.0", headers=h).status_code == 422
    ok = app_client.get("/v1/audit/export?since=2026-01-01T00:00:00Z", headers=h)
    assert ok.status_code == 200
