"""The Celery client side: configuration shared with workers, and sending tasks by name."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from service.core.config import Settings
from service.db.session import database_url
from service.queue.broker_tables import ensure_broker_tables
from service.queue.names import QUEUE_ML, TASK_DISPATCH_LATER, TASK_QUEUES


def broker_url(settings: Settings) -> str:
    # Embedded default: the database is also the broker (kombu's SQLAlchemy transport).
    return settings.broker_url or "sqla+" + database_url(settings)


def result_backend(settings: Settings) -> str:
    return settings.result_backend or "db+" + database_url(settings)


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": broker_url(settings),
        "result_backend": result_backend(settings),
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "enable_utc": True,
    }


@lru_cache(maxsize=4)
def _client(broker: str, backend: str) -> Celery:
    ensure_broker_tables(broker)
    app = Celery("lethe-client")
    app.conf.update(broker_url=broker, result_backend=backend, task_ignore_result=True)
    app.conf.update(broker_connection_retry_on_startup=True)
    return app


def send_task(
    settings: Settings,
    name: str,
    args: list[Any],
    *,
    countdown: float | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    app = _client(broker_url(settings), result_backend(settings))
    if countdown and TASK_QUEUES[name] == QUEUE_ML:
        # A worker reserves every countdown (ETA) message it sees, whatever its prefetch limit,
        # and runs them one after the other: one idle ML worker would hoard a whole batch of
        # shard retrains while another stayed idle. So the wait is held on the requests queue
        # by a dispatch task (workers.tasks.dispatch), and ML workers only see work that is due.
        app.send_task(
            TASK_DISPATCH_LATER,
            args=[name, args],
            queue=TASK_QUEUES[TASK_DISPATCH_LATER],
            countdown=countdown,
            headers=headers,
        )
        return
    app.send_task(
        name, args=args, queue=TASK_QUEUES[name], countdown=countdown or None, headers=headers
    )
