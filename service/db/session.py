"""Engines and sessions: one engine per process and URL; where the database is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings, get_settings


class DatabaseNotConfigured(RuntimeError):
    pass


def database_url(settings: Settings) -> str:
    """The configured server, or the embedded one the CLI started (it sets the variable)."""
    if settings.database_url is None:
        raise DatabaseNotConfigured(
            "LETHE_DATABASE_URL is not set; start lethe through its CLI (lethe serve / demo), "
            "which runs an embedded PostgreSQL, or point it at a server"
        )
    return settings.database_url


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    # hide_parameters: a database error's message must never carry row values into logs
    # (free-text reasons, idempotency keys).
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, hide_parameters=True)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """The one owner of a unit of work outside HTTP: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session


SETTINGS_INFO = "lethe_settings"


def bind_settings(session: Session, settings: Settings) -> Session:
    """Record the settings of the process that opened ``session`` (the API's, a worker's), for
    domain code that reaches the session but takes no settings (the request's keys)."""
    session.info[SETTINGS_INFO] = settings
    return session


def settings_of(session: Session | None) -> Settings:
    """The settings bound to ``session``, else the process's."""
    bound = session.info.get(SETTINGS_INFO) if session is not None else None
    return bound if isinstance(bound, Settings) else get_settings()
