"""Test databases on a real PostgreSQL: the server named by LETHE_TEST_DATABASE_URL, or an
embedded one. Each test run gets fresh databases, built by Alembic, dropped at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.db.enums import ModelKind
from service.db.tables import MlModel
from service.stack.migrate import upgrade


def _admin_dsn(server_url: str) -> str:
    url = make_url(server_url).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


@contextmanager
def server_url(tmp_root: Path) -> Iterator[str]:
    configured = os.environ.get("LETHE_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from service.stack.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(tmp_root)
    try:
        yield embedded.url
    finally:
        embedded.stop()


@contextmanager
def fresh_database(server: str, prefix: str = "lethe_t", revision: str = "head") -> Iterator[str]:
    """A new database migrated to ``revision`` (an older one: to write rows as older code did,
    then upgrade), dropped at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_dsn(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        if revision == "head":
            upgrade(url)
        else:
            from alembic import command

            from service.stack.migrate import alembic_config

            command.upgrade(alembic_config(url), revision)
        yield url
    finally:
        from sqlalchemy import create_engine  # dispose pools holding connections to it

        from service.db.session import get_engine

        get_engine.cache_clear()
        create_engine(url).dispose()
        with psycopg.connect(_admin_dsn(server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bare_generative_model(session: Session, prefix: str = "gen") -> MlModel:
    """A generative model row with no config (flushed): what tests of rule sets, purges and
    keys hang their rows on, without registering a real model."""
    model = MlModel(
        id=uuid.uuid4(),
        name=f"{prefix}-{uuid.uuid4().hex[:8]}",
        kind=ModelKind.generative,
        config={},
        policy={},
        created_by="test",
    )
    session.add(model)
    session.flush()
    return model
