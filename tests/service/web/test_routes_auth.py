"""Signing in (a wrong password, a missing CSRF token) and the first admin's one-time setup link."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.console import (
    PASSWORD,
    csrf_of,
)


def test_wrong_password_and_signin_without_csrf(web: TestClient, accounts: dict[str, str]) -> None:
    page = web.get("/console/signin")
    bad = web.post(
        "/console/signin",
        data={"email": accounts["dpo"], "password": "nope", "csrf_token": csrf_of(page.text)},
    )
    assert bad.status_code == 401 and "not right" in bad.text
    no_token = web.post("/console/signin", data={"email": accounts["dpo"], "password": PASSWORD})
    assert no_token.status_code == 403 and "csrf_rejected" in no_token.text


def test_first_admin_invite_is_one_time(web: TestClient, session: Session) -> None:
    from service.web.accounts import first_admin_invite

    token = first_admin_invite(session)
    session.commit()
    assert token is not None
    page = web.get(f"/console/setup/{token}")
    data = {"email": "first@example.test", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    r = web.post(f"/console/setup/{token}", data=data, follow_redirects=False)
    assert r.status_code == 303 and web.get("/console/users").status_code == 200
    assert web.get(f"/console/setup/{token}").status_code == 404
    assert first_admin_invite(session) is None
