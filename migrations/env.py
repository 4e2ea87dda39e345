"""Alembic environment: the schema in service.db is the single source."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from service.core.config import get_settings
from service.db import Base
from service.db.session import database_url

config = context.config
target_metadata = Base.metadata


# The embedded default keeps the Celery broker's and result backend's tables in the same
# database; they are kombu's and Celery's to create, never lethe's migrations'.
_FOREIGN_PREFIXES = ("kombu_", "celery_")


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return not (type_ == "table" and name is not None and name.startswith(_FOREIGN_PREFIXES))


def _url() -> str:
    return config.attributes.get("database_url") or database_url(get_settings())


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        include_name=_include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            include_name=_include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            compare_type=True,
            include_name=_include_name,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
