"""Console fixtures: one account per role, a client that keeps the (Secure) session cookie.
Signing in and CSRF tokens: tests/support/console.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from tests.support.api import SentTasks
from tests.support.console import PASSWORD, ROLES, enrol_second_factor


@pytest.fixture
def accounts(factory: sessionmaker[Session]) -> dict[str, str]:
    from service.web.accounts import create_user

    with factory() as s, s.begin():
        for role in ROLES:
            create_user(s, f"{role}@example.test", role, PASSWORD, actor="test")
        enrol_second_factor(s, "admin@example.test")
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
