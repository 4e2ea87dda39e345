"""Using the DPO console in tests: its accounts' password, signing in, CSRF tokens, the
request form."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.tables import ErasureRequest
from tests.support.sample_data import CANARY_SUBJECT

PASSWORD = "correct horse battery staple"
ROLES = ("dpo", "ml_engineer", "auditor", "admin")


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> None:
    page = client.get("/console/signin")
    r = client.post(
        "/console/signin",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def form_token(client: TestClient, path: str = "/console/") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


def request_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ErasureRequest)) or 0


def file_form(client: TestClient, **extra: str) -> dict[str, str]:
    """The filled-in form of a new request (for the canary subject), with its tokens."""
    page = client.get("/console/requests/new")
    assert page.status_code == 200
    key = re.search(r'name="form_key" value="([^"]+)"', page.text)
    assert key
    return {
        "csrf_token": csrf_of(page.text),
        "form_key": key.group(1),
        "subject_id": CANARY_SUBJECT,
        "legal_ground": "b",
        "scope_kind": "all",
        **extra,
    }
