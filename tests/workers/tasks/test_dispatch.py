"""Delayed ML work waits on the requests queue, so that ML workers only see work that is due (a
worker reserves every countdown message it sees, whatever its prefetch limit)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from service.core.config import Settings, get_settings
from service.queue.client import send_task
from service.queue.names import (
    QUEUE_ML,
    QUEUE_REQUESTS,
    TASK_DISPATCH_LATER,
    TASK_PROCESS_REQUEST,
    TASK_RETRAIN_SHARD,
)
from tests.support.db import fresh_database


@pytest.fixture
def broker_db(pg_server: str) -> Iterator[str]:
    with fresh_database(pg_server, prefix="lethe_kb") as url:
        yield url


def _messages(url: str) -> list[dict[str, Any]]:
    """(queue, task, eta, args) of every message in the database broker, oldest first."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT q.name, m.payload FROM kombu_message m "
                "JOIN kombu_queue q ON q.id = m.queue_id ORDER BY m.id"
            )
        ).all()
    engine.dispose()
    out = []
    for queue, payload in rows:
        message = json.loads(payload)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        headers = message["headers"]
        out.append({"queue": queue, "task": headers["task"], "eta": headers["eta"], "args": args})
    return out


def test_delayed_ml_work_waits_on_the_requests_queue(
    broker_db: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.tasks.dispatch import dispatch_later

    monkeypatch.setenv("LETHE_BROKER_URL", "sqla+" + broker_db)
    # Celery's result backend would create its tables in the tests' shared database.
    monkeypatch.setenv("LETHE_RESULT_BACKEND", "db+" + broker_db)
    get_settings.cache_clear()
    try:
        here = get_settings()
        send_task(here, TASK_RETRAIN_SHARD, ["job-1"], countdown=30)
        send_task(here, TASK_RETRAIN_SHARD, ["job-2"])
        send_task(here, TASK_PROCESS_REQUEST, ["request-1"], countdown=30)
        [delayed, due, request] = _messages(broker_db)
        assert (delayed["queue"], delayed["task"]) == (QUEUE_REQUESTS, TASK_DISPATCH_LATER)
        assert delayed["eta"] and delayed["args"] == [TASK_RETRAIN_SHARD, ["job-1"]]
        # Due now, or not ML work: sent as is.
        assert (due["queue"], due["task"], due["eta"]) == (QUEUE_ML, TASK_RETRAIN_SHARD, None)
        assert (request["queue"], request["task"]) == (QUEUE_REQUESTS, TASK_PROCESS_REQUEST)
        assert request["eta"]

        # When due, the dispatcher sends the ML task, with no countdown, to the ML queue.
        assert dispatch_later(*delayed["args"]) == "sent"
        assert dispatch_later(TASK_PROCESS_REQUEST, ["request-2"]) == "refused"
        last = _messages(broker_db)[-1]
        assert last == {
            "queue": QUEUE_ML,
            "task": TASK_RETRAIN_SHARD,
            "eta": None,
            "args": ["job-1"],
        }
    finally:
        get_settings.cache_clear()
