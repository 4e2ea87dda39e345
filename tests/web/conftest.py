"""Console fixtures: one account per role, a client that keeps the (Secure) session cookie."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from tests.conftest import SentTasks

PASSWORD = "correct horse battery staple"
ROLES = ("dpo", "ml_engineer", "auditor", "admin")


@pytest.fixture
def accounts(factory: sessionmaker[Session]) -> dict[str, str]:
    from service.web.accounts import create_user

    with factory() as s, s.begin():
        for role in ROLES:
            create_user(s, f"{role}@example.test", role, PASSWORD, actor="test")
    return {role: f"{role}@example.test" for role in ROLES}


@pytest.fixture
def web(
    settings: Settings, factory: sessionmaker[Session], sent_tasks: SentTasks
) -> Iterator[TestClient]:
    from service.app.factory import create_app

    app = create_app(settings)
    app.state.session_factory = factory
    # https: the session cookie is Secure outside development.
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as c:
        yield c


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
