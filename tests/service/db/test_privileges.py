"""The runtime role: a login that is a member of lethe_runtime connects, reads and appends
audit events, and cannot switch the trigger off, UPDATE, DELETE or TRUNCATE them; the check
production runs names what a superuser could do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from service.audit import append_event
from service.db.privileges import (
    RUNTIME_ROLE,
    PrivilegedConnection,
    audit_privilege_problems,
    ensure_runtime_login,
    refuse_privileged,
)


@pytest.fixture
def runtime(database_url: str) -> Iterator[Engine]:
    """A login in lethe_runtime, made as `lethe migrate` makes it (twice: it is idempotent)."""
    login, password = f"lethe_t_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    url = make_url(database_url).set(username=login, password=password)
    runtime_url = url.render_as_string(hide_password=False)
    assert ensure_runtime_login(database_url, runtime_url) == login
    assert ensure_runtime_login(database_url, runtime_url) == login
    owner = create_engine(database_url)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        with owner.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {login}"))
            conn.execute(text(f"DROP ROLE {login}"))
        owner.dispose()


def test_the_runtime_role_reads_and_appends_but_cannot_rewrite(runtime: Engine) -> None:
    with runtime.connect() as conn:
        assert audit_privilege_problems(conn) == []
        refuse_privileged(conn)
        conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
        conn.execute(text("SELECT count(*) FROM erasure_requests")).scalar_one()
        conn.rollback()
    with Session(runtime) as session:
        event = append_event(
            session, actor="t", action="test.event", target_type="t", target_id="1"
        )
        assert event.mac
        session.rollback()
    refused = {
        "ALTER TABLE audit_events DISABLE TRIGGER USER": "must be owner",
        "ALTER TABLE audit_events DISABLE TRIGGER ALL": "must be owner",
        "DROP TRIGGER audit_events_no_update_delete ON audit_events": "must be owner",
        "UPDATE audit_events SET actor = 'x'": "permission denied",
        "DELETE FROM audit_events": "permission denied",
        "TRUNCATE audit_events": "permission denied",
        "ALTER TABLE audit_events OWNER TO CURRENT_USER": "must be owner",
    }
    for sql, error in refused.items():
        with runtime.connect() as conn, pytest.raises(ProgrammingError, match=error):
            conn.execute(text(sql))


def test_production_refuses_a_superuser(database_url: str) -> None:
    owner = create_engine(database_url)
    try:
        with owner.connect() as conn:
            problems = audit_privilege_problems(conn)
            assert "the service connects as a database superuser" in problems
            with pytest.raises(PrivilegedConnection, match=RUNTIME_ROLE):
                refuse_privileged(conn)
    finally:
        owner.dispose()
