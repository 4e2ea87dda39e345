"""Using the DPO console in tests: its accounts' password, the admin's authenticator secret,
signing in (with the second step when one is set up), CSRF tokens, the request form."""

from __future__ import annotations

import re
import time

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.security import encrypt
from service.db.base import utcnow
from service.db.tables import ConsoleUser, ErasureRequest
from tests.support.sample_data import CANARY_SUBJECT

PASSWORD = "correct horse battery staple"
ROLES = ("dpo", "ml_engineer", "auditor", "admin")
# The admin accounts of the tests have this authenticator secret (admins must have one).
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def enrol_second_factor(session: Session, email: str, secret: str = TOTP_SECRET) -> None:
    """As if the person had set up their app (flushes; the caller commits)."""
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == email))
    assert user is not None
    user.totp_secret_encrypted = encrypt(get_settings(), secret.encode())
    user.totp_enabled_at = utcnow()
    session.flush()


def fresh_code(secret: str = TOTP_SECRET, used: set[str] | None = None) -> str:
    """A code not used yet in this test run (a code is accepted once: replays are refused)."""
    totp = pyotp.TOTP(secret)
    seen = _USED if used is None else used
    for _ in range(40):
        now = time.time()
        for at in (now, now + 30):
            code = totp.at(at)
            step = int(at // 30)
            if step not in _STEPS:
                _STEPS.add(step)
                seen.add(code)
                return code
        time.sleep(1)
    raise AssertionError("no fresh TOTP step within 40 s")


_USED: set[str] = set()
_STEPS: set[int] = set()


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> None:
    page = client.get("/console/signin")
    r = client.post(
        "/console/signin",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    if r.headers["location"].startswith("/console/signin/code"):
        code_page = client.get(r.headers["location"])
        r = client.post(
            "/console/signin/code",
            data={"code": fresh_code(), "csrf_token": csrf_of(code_page.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text


def form_token(client: TestClient, path: str = "/console/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def request_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ErasureRequest)) or 0


def form_key_of(html: str) -> str:
    key = re.search(r'name="form_key" value="([^"]+)"', html)
    assert key
    return key.group(1)


def file_form(client: TestClient, **extra: str) -> dict[str, str]:
    """The filled-in form of a new request (for the canary subject), with its tokens."""
    page = client.get("/console/requests/new")
    assert page.status_code == 200
    return {
        "csrf_token": csrf_of(page.text),
        "form_key": form_key_of(page.text),
        "subject_id": CANARY_SUBJECT,
        "legal_ground": "b",
        "scope_kind": "all",
        **extra,
    }
