"""kombu's tables for the embedded broker (the database itself), created once per database.

kombu's SQLAlchemy transport creates its tables the first time a process uses a channel, with
no lock: two workers started at the same moment on a fresh database both ran
``CREATE SEQUENCE queue_id_sequence`` and the loser exited on a UniqueViolation. Creating them
here first, under a PostgreSQL advisory lock, makes the creation happen once; kombu then finds
them.
"""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import create_engine, func, pool, select

SQLA_PREFIX = "sqla+"
# Any constant unique to this use; pg_advisory_lock takes a bigint.
_LOCK_KEY = 0x6C65_7468_655F_6B62  # "lethe_kb"


@lru_cache(maxsize=8)
def ensure_broker_tables(broker_url: str) -> None:
    """Create kombu's tables if the broker is a database; a no-op for Redis and AMQP."""
    if not broker_url.startswith(SQLA_PREFIX):
        return
    from kombu import Connection  # type: ignore[attr-defined]
    from kombu.transport.sqlalchemy.models import metadata

    engine = create_engine(broker_url.removeprefix(SQLA_PREFIX), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            # Session-level lock, held until released below or the connection closes.
            conn.execute(select(func.pg_advisory_lock(_LOCK_KEY)))
            try:
                with Connection(broker_url) as broker:  # type: ignore[no-untyped-call]
                    channel = broker.default_channel
                    # The table models are declared lazily, per channel's table names.
                    channel.queue_cls, channel.message_cls  # noqa: B018
                metadata.create_all(conn)
                conn.commit()
            finally:
                conn.execute(select(func.pg_advisory_unlock(_LOCK_KEY)))
                conn.commit()
    finally:
        engine.dispose()
