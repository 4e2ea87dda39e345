"""API tokens expire (by default too) and can be revoked (rotation) and listed; their names are
validated and cannot pass for a console account or a lethe process."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.support.api import auth


def _new(client: TestClient, admin: str, name: str, **extra: object) -> str:
    r = client.post(
        "/v1/tokens", json={"name": name, "role": "auditor", **extra}, headers=auth(admin)
    )
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def test_revoked_token_stops_working(app_client: TestClient, tokens: dict[str, str]) -> None:
    token = _new(app_client, tokens["admin"], "rotating")
    assert app_client.get("/v1/audit/verify", headers=auth(token)).status_code == 200
    replacement = _new(app_client, tokens["admin"], "rotating-2")
    r = app_client.post("/v1/tokens/rotating/revoke", headers=auth(tokens["admin"]))
    assert r.status_code == 200 and r.json() == {"revoked": 1}
    assert app_client.get("/v1/audit/verify", headers=auth(token)).status_code == 401
    assert app_client.get("/v1/audit/verify", headers=auth(replacement)).status_code == 200
    again = app_client.post("/v1/tokens/rotating/revoke", headers=auth(tokens["admin"]))
    assert again.status_code == 404 and again.json()["error"]["code"] == "token_not_found"


def test_expired_token_stops_working(
    app_client: TestClient, tokens: dict[str, str], session: Session
) -> None:
    token = _new(app_client, tokens["admin"], "short-lived", expires_in_days=1)
    assert app_client.get("/v1/audit/verify", headers=auth(token)).status_code == 200
    session.execute(
        text(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' "
            "WHERE name = 'short-lived'"
        )
    )
    session.commit()
    app_client.app.state.token_cache.clear()  # type: ignore[attr-defined]
    assert app_client.get("/v1/audit/verify", headers=auth(token)).status_code == 401


def test_token_names_are_validated(app_client: TestClient, tokens: dict[str, str]) -> None:
    for name in ("a\r\nb", "=HYPERLINK(1)", "-x", "", "a b", "user-f5f0bdb4", "worker", "System"):
        r = app_client.post(
            "/v1/tokens", json={"name": name, "role": "dpo"}, headers=auth(tokens["admin"])
        )
        assert r.status_code == 422, name
        assert "HYPERLINK" not in r.text


def test_tokens_expire_by_default_and_are_listed(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    from datetime import UTC, datetime

    from service.api.tokens import DEFAULT_EXPIRY_DAYS

    r = app_client.post(
        "/v1/tokens", json={"name": "ci-bot", "role": "dpo"}, headers=auth(tokens["admin"])
    )
    expires = datetime.fromisoformat(r.json()["expires_at"])
    assert abs((expires - datetime.now(UTC)).days - DEFAULT_EXPIRY_DAYS) <= 1
    listed = app_client.get("/v1/tokens", headers=auth(tokens["admin"]))
    rows = {t["name"]: t for t in listed.json()}
    assert rows["ci-bot"]["state"] == "active" and rows["ci-bot"]["role"] == "dpo"
    assert "token" not in rows["ci-bot"] and "lethe_" not in listed.text
    assert app_client.get("/v1/tokens", headers=auth(tokens["dpo"])).status_code == 403
