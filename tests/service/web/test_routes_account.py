"""A person's own account: changing the password ends the other sessions; the session list
and ending one; the last active admin cannot be disabled, and a disabled account comes back
with enable."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import AuditEvent
from service.web.accounts import disable_user
from tests.support.console import PASSWORD, csrf_of, sign_in


def test_password_change_and_sessions(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    from fastapi.testclient import TestClient as Client

    other = Client(web.app, base_url="https://testserver")
    sign_in(other, accounts["dpo"])
    sign_in(web, accounts["dpo"])
    page = web.get("/console/account")
    assert page.text.count('action="/console/account/sessions/revoke"') == 2
    token = csrf_of(page.text)
    new = "a brand new passphrase"
    wrong = web.post(
        "/console/account/password",
        data={
            "csrf_token": token,
            "current_password": "not it at all",
            "new_password": new,
            "new_password_again": new,
        },
    )
    assert wrong.status_code == 422 and "current password is not right" in wrong.text
    ok = web.post(
        "/console/account/password",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": new,
            "new_password_again": new,
        },
    )
    assert ok.status_code == 200 and "other sessions ended" in ok.text
    assert other.get("/console/", follow_redirects=False).status_code == 303
    assert web.get("/console/").status_code == 200
    events = session.scalars(select(AuditEvent.action)).all()
    assert "user.password_changed" in events
    web.cookies.clear()
    sign_in(web, accounts["dpo"], new)
    page = web.get("/console/account")
    # The session kept through the change, and this new one.
    assert len(re.findall(r'name="session_id" value="([^"]+)"', page.text)) == 2
    this = re.search(r'\(this one\).*?name="session_id" value="([^"]+)"', page.text, re.S)
    assert this
    gone = web.post(
        "/console/account/sessions/revoke",
        data={"csrf_token": csrf_of(page.text), "session_id": this.group(1)},
        follow_redirects=False,
    )
    assert gone.headers["location"] == "/console/signin"
    assert web.get("/console/", follow_redirects=False).status_code == 303


def test_the_last_admin_cannot_be_disabled_and_enable_brings_one_back(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["admin"])
    page = web.get("/console/users")
    assert "the only active admin: cannot be disabled" in page.text
    r = web.post(
        "/console/users/disable",
        data={"csrf_token": csrf_of(page.text), "email": accounts["admin"]},
    )
    assert r.status_code == 409 and "only active admin" in r.text
    r = web.post(
        "/console/users/disable", data={"csrf_token": csrf_of(page.text), "email": accounts["dpo"]}
    )
    assert r.status_code == 200 and "Enable dpo@example.test" in r.text
    r = web.post(
        "/console/users/enable", data={"csrf_token": csrf_of(page.text), "email": accounts["dpo"]}
    )
    assert "Disable dpo@example.test" in r.text
    import pytest

    from service.core.errors import DomainError

    with pytest.raises(DomainError) as refused:
        disable_user(session, accounts["admin"], "test")
    assert refused.value.code == "last_admin"
