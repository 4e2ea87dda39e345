"""Console sessions: a strict HttpOnly Secure cookie, sign-out and the idle timeout, and progress
polling that does not keep a session alive."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.tables import ConsoleSession
from tests.support.console import (
    PASSWORD,
    csrf_of,
    file_form,
    form_token,
    sign_in,
)


def test_signin_sets_a_strict_httponly_secure_cookie(
    web: TestClient, accounts: dict[str, str]
) -> None:
    assert (
        web.get("/console/", follow_redirects=False)
        .headers["location"]
        .startswith("/console/signin")
    )
    page = web.get("/console/signin")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    r = web.post(
        "/console/signin",
        data={"email": accounts["dpo"], "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    cookie = r.headers["set-cookie"].lower()
    assert "lethe_session=" in cookie and "httponly" in cookie
    assert "samesite=strict" in cookie and "secure" in cookie
    assert web.get("/console/").status_code == 200


def test_signout_and_idle_timeout(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["auditor"])
    token = form_token(web)
    r = web.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert web.get("/console/", follow_redirects=False).status_code == 303
    sign_in(web, accounts["auditor"])
    session.execute(
        update(ConsoleSession).values(last_seen_at=ConsoleSession.last_seen_at - timedelta(hours=2))
    )
    session.commit()
    location = web.get("/console/", follow_redirects=False).headers["location"]
    assert location.startswith("/console/signin")


def test_progress_polling_does_not_keep_a_session_alive(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    r = web.post("/console/requests", data=file_form(web), follow_redirects=False)
    rid = r.headers["location"].split("/")[-1].split("?")[0]
    session.execute(
        update(ConsoleSession).values(
            last_seen_at=ConsoleSession.last_seen_at - timedelta(minutes=25)
        )
    )
    session.commit()
    before = session.scalars(select(ConsoleSession.last_seen_at)).all()
    polled = web.get(f"/console/requests/{rid}/progress")
    assert polled.status_code == 200 and polled.json()["status"] == "received"
    session.expire_all()
    assert session.scalars(select(ConsoleSession.last_seen_at)).all() == before
    web.get("/console/")
    session.expire_all()
    assert session.scalars(select(ConsoleSession.last_seen_at)).all() != before
