"""Delayed sends to the ML queue (service.queue.client): held here, on the requests queue,
until due, then sent to the ML queue as an ordinary message any free ML worker may take."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from service.queue.client import send_task
from service.queue.names import QUEUE_ML, TASK_DISPATCH_LATER, TASK_QUEUES
from workers.base import DbTask, correlation_headers, db_task_options


@shared_task(name=TASK_DISPATCH_LATER, **db_task_options(max_retries=5))
def dispatch_later(self: DbTask, name: str, args: list[Any]) -> str:
    if name not in TASK_QUEUES or TASK_QUEUES[name] != QUEUE_ML:
        return "refused"  # only ML tasks are ever deferred through here
    # Sent again (e.g. redelivered after a crash) means a duplicate ML message: every ML task
    # claims its job in the database first, so the second copy finds nothing to do.
    send_task(self.settings, name, args, headers=correlation_headers())
    return "sent"
