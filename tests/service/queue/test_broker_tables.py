"""The embedded broker's tables are created once however many workers start together."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from service.queue.broker_tables import ensure_broker_tables
from tests.support.db import fresh_database

_ENSURE = (
    "import sys; from service.queue.broker_tables import ensure_broker_tables as e; e(sys.argv[1])"
)


@pytest.fixture
def broker_db(pg_server: str) -> Iterator[str]:
    with fresh_database(pg_server, prefix="lethe_kb") as url:
        yield url


def test_workers_starting_together_create_the_broker_tables_once(broker_db: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ENSURE, "sqla+" + broker_db],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    engine = create_engine(broker_db)
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'kombu_%' ORDER BY 1")
        ).scalars()
        assert list(tables) == ["kombu_message", "kombu_queue"]
    engine.dispose()
    ensure_broker_tables("redis://127.0.0.1:6379/0")  # not a database: nothing to create
