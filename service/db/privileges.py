"""What the connected database role may do to the audit log: the service should run as a
member of ``lethe_runtime`` (SELECT and INSERT on ``audit_events``, owner of nothing that
matters), never as a superuser or the owner of ``audit_events``, who could switch the
append-only trigger off (docs/THREAT_MODEL.md)."""

from __future__ import annotations

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

RUNTIME_ROLE = "lethe_runtime"


class PrivilegedConnection(RuntimeError):
    """Production refuses to run the service as a role that can rewrite the audit log."""


def audit_privilege_problems(conn: Connection) -> list[str]:
    """Why the connected role could change the audit log; empty when it cannot."""
    row = conn.execute(
        text(
            "SELECT r.rolsuper, pg_get_userbyid(c.relowner) = current_user AS owner, "
            "has_table_privilege('audit_events', 'UPDATE') AS can_update, "
            "has_table_privilege('audit_events', 'DELETE') AS can_delete, "
            "has_table_privilege('audit_events', 'TRUNCATE') AS can_truncate "
            "FROM pg_roles r, pg_class c "
            "WHERE r.rolname = current_user AND c.oid = 'audit_events'::regclass"
        )
    ).one()
    problems = []
    if row.rolsuper:
        problems.append("the service connects as a database superuser")
    if row.owner:
        problems.append("the service's role owns audit_events")
    for granted, what in (
        (row.can_update, "UPDATE"),
        (row.can_delete, "DELETE"),
        (row.can_truncate, "TRUNCATE"),
    ):
        if granted and not row.rolsuper:
            problems.append(f"the service's role may {what} audit_events")
    return problems


def refuse_privileged(conn: Connection) -> None:
    problems = audit_privilege_problems(conn)
    if problems:
        raise PrivilegedConnection(
            "; ".join(problems)
            + f": in production connect as a member of {RUNTIME_ROLE} (see docs/OPERATIONS.md)"
        )


def refuse_in_production(environment: str, factory: sessionmaker[Session]) -> None:
    """At start-up: production never runs the service as a role that can rewrite the log."""
    if environment != "production":
        return
    with factory() as session:
        refuse_privileged(session.connection())


def ensure_runtime_login(owner_url: str, runtime_url: str) -> str:
    """Make the login of ``runtime_url`` (its user and password) a member of lethe_runtime and
    nothing more, connected as the owner; returns the login's name."""
    runtime = make_url(runtime_url)
    login, password = runtime.username, runtime.password
    if not login or not password:
        raise ValueError("the runtime database URL needs a user and a password")
    owner = make_url(owner_url).set(drivername="postgresql")
    with psycopg.connect(owner.render_as_string(hide_password=False), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (login,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB PASSWORD {}").format(
                sql.Identifier(login), sql.Literal(str(password))
            )
        )
        conn.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(RUNTIME_ROLE), sql.Identifier(login))
        )
    return str(login)
