"""Signing in: a wrong password, a missing CSRF token, throttling with lockout and back-off,
the second factor (enrolment, sign-in, replay, recovery codes), deep links that survive
sign-in; single-use invitation links (the first admin's included)."""

from __future__ import annotations

import re

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.tables import AuditEvent, ConsoleUser, SignInThrottle
from service.web import throttle
from tests.support.console import PASSWORD, csrf_of, sign_in


def _try(web: TestClient, email: str, password: str) -> int:
    page = web.get("/console/signin")
    r = web.post(
        "/console/signin",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    return r.status_code


def test_wrong_password_and_signin_without_csrf(web: TestClient, accounts: dict[str, str]) -> None:
    page = web.get("/console/signin")
    bad = web.post(
        "/console/signin",
        data={"email": accounts["dpo"], "password": "nope", "csrf_token": csrf_of(page.text)},
    )
    assert bad.status_code == 401 and "not right" in bad.text
    no_token = web.post("/console/signin", data={"email": accounts["dpo"], "password": PASSWORD})
    assert no_token.status_code == 403 and 'data-error-code="csrf_rejected"' in no_token.text


def test_failures_lock_the_account_then_back_off(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    email = accounts["auditor"]
    statuses = [_try(web, email, f"wrong {i}") for i in range(throttle.ACCOUNT_FAILURES)]
    assert statuses == [401] * (throttle.ACCOUNT_FAILURES - 1) + [429]
    # Locked: even the right password is refused, before it is checked.
    assert _try(web, email, PASSWORD) == 429
    key = throttle.account_key(email)
    row = session.get(SignInThrottle, key)
    assert row is not None and row.lockouts == 1 and row.locked_until is not None
    first = row.locked_until - row.last_failure_at  # type: ignore[operator]
    actions = session.scalars(
        select(AuditEvent.action).where(AuditEvent.action.like("signin.%"))
    ).all()
    assert actions.count("signin.failed") == throttle.ACCOUNT_FAILURES
    assert actions.count("signin.locked") == 1
    logged = session.scalars(select(AuditEvent.details).where(AuditEvent.action == "signin.failed"))
    assert all(email not in str(d) and "testclient" not in str(d) for d in logged)
    # The lock runs out; the next lockout lasts twice as long.
    session.execute(update(SignInThrottle).values(locked_until=None))
    session.commit()
    for i in range(throttle.ACCOUNT_FAILURES):
        _try(web, email, f"again {i}")
    session.expire_all()
    row = session.get(SignInThrottle, key)
    assert row is not None and row.lockouts == 2 and row.locked_until is not None
    assert row.locked_until - row.last_failure_at == 2 * first  # type: ignore[operator]
    session.execute(update(SignInThrottle).values(locked_until=None))
    session.commit()
    assert _try(web, email, PASSWORD) == 303


def test_second_factor_enrolment_sign_in_replay_and_recovery(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    email = accounts["dpo"]
    sign_in(web, email)
    page = web.get("/console/account/second-factor")
    assert page.status_code == 200 and "<svg" in page.text
    match = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert match
    totp = pyotp.TOTP(match.group(1))
    token = csrf_of(page.text)
    wrong = web.post("/console/account/second-factor", data={"csrf_token": token, "code": "1"})
    assert wrong.status_code == 422
    # The code is kept: replaying it below must fail even when a 30 s step has passed since.
    enrolment_code = totp.now()
    done = web.post(
        "/console/account/second-factor", data={"csrf_token": token, "code": enrolment_code}
    )
    codes = re.findall(r"<li>([0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4})</li>", done.text)
    assert done.status_code == 200 and len(codes) == 10
    web.cookies.clear()
    # Password right: the session opens nothing until the code is given.
    assert _try(web, email, PASSWORD) == 303
    blocked = web.get("/console/", follow_redirects=False)
    assert blocked.headers["location"] == "/console/signin/code"
    code_page = web.get("/console/signin/code")
    replay = web.post(
        "/console/signin/code",
        data={"code": enrolment_code, "csrf_token": csrf_of(code_page.text)},
        follow_redirects=False,
    )
    assert replay.status_code == 401  # the enrolment's code, used once already
    ok = web.post(
        "/console/signin/code",
        data={"code": codes[0], "csrf_token": csrf_of(replay.text)},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and web.get("/console/").status_code == 200
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == email))
    assert user is not None and len(user.recovery_code_hashes) == 9
    assert codes[0] not in str(user.recovery_code_hashes)


def test_an_admin_without_second_factor_must_enrol_first(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    session.execute(
        update(ConsoleUser)
        .where(ConsoleUser.email == accounts["admin"])
        .values(totp_enabled_at=None, totp_secret_encrypted=None)
    )
    session.commit()
    sign_in(web, accounts["admin"])
    for path in ("/console/", "/console/users", "/console/models"):
        r = web.get(path, follow_redirects=False)
        assert r.headers["location"] == "/console/account/second-factor", path
    assert web.get("/console/account/second-factor").status_code == 200


def test_a_deep_link_survives_sign_in(web: TestClient, accounts: dict[str, str]) -> None:
    r = web.get("/console/audit?x=1", follow_redirects=False)
    assert r.status_code == 303
    signin = web.get(r.headers["location"])
    assert 'name="next" value="/console/audit?x=1"' in signin.text
    done = web.post(
        "/console/signin",
        data={
            "email": accounts["auditor"],
            "password": PASSWORD,
            "csrf_token": csrf_of(signin.text),
            "next": "/console/audit?x=1",
        },
        follow_redirects=False,
    )
    assert done.headers["location"] == "/console/audit?x=1"
    outside = web.get("/console/signin", params={"next": "https://evil.example/"})
    assert 'name="next" value="/console/"' in outside.text


def _redeem(web: TestClient, link: str, **fields: str) -> int:
    page = web.get(link)
    if page.status_code != 200:
        return page.status_code
    data = {"password": PASSWORD, "password_again": PASSWORD, "name": "Ana", **fields}
    r = web.post(link, data={**data, "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    return r.status_code


def test_the_first_admin_link_is_single_use_and_dies_once_an_admin_exists(
    web: TestClient, session: Session
) -> None:
    from service.web.accounts import first_admin_invite

    token = first_admin_invite(session)
    session.commit()
    assert token is not None and first_admin_invite(session) is None  # printed once
    assert _redeem(web, f"/console/invite/{token}", email="first@example.test") == 303
    assert web.get("/console/account/second-factor").status_code == 200
    assert web.get(f"/console/invite/{token}").status_code == 404
    assert first_admin_invite(session) is None
    assert first_admin_invite(session, replace=True) is None  # an admin exists


def test_an_invitation_sets_the_persons_own_password_once(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["admin"])
    token = csrf_of(web.get("/console/users").text)
    made = web.post(
        "/console/users",
        data={"csrf_token": token, "email": "new@example.test", "name": "Nia", "role": "dpo"},
    )
    link = re.search(r"(/console/invite/[A-Za-z0-9_-]+)<", made.text)
    assert made.status_code == 200 and link
    web.cookies.clear()
    assert _redeem(web, link.group(1), password_again="something else!!") == 422
    assert _redeem(web, link.group(1)) == 303
    web.cookies.clear()
    assert _redeem(web, link.group(1)) == 404
    sign_in(web, "new@example.test")
    assert 'class="who">Ana <span' in web.get("/console/").text  # the name they chose
