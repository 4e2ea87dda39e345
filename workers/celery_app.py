"""The Celery app of the workers: queues, reliability settings, the reaper's schedule."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, signals

from service.core.config import get_settings
from service.core.observability import configure_logging, correlation_id
from service.queue.client import celery_config
from service.queue.names import QUEUE_REQUESTS, TASK_REAP_STUCK_JOBS, TASK_SHRED_KEYS

# Long ML work: a retrain is killed (and retried by redelivery) past these limits.
ML_SOFT_TIME_LIMIT_S = 3 * 3600
ML_TIME_LIMIT_S = ML_SOFT_TIME_LIMIT_S + 300


def create_celery_app() -> Celery:
    settings = get_settings()
    app = Celery("lethe")
    app.conf.update(celery_config(settings))
    app.conf.update(
        # At-least-once: a task is acknowledged after it ran, and redelivered if the worker
        # died mid-way; every task is written to be safe to run twice.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Prefork, with queue locks a killed child cannot leave held (workers.pool).
        worker_pool="workers.pool:TaskPool",
        task_default_queue=QUEUE_REQUESTS,
        task_soft_time_limit=ML_SOFT_TIME_LIMIT_S,
        task_time_limit=ML_TIME_LIMIT_S,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reap-stuck-jobs": {
                "task": TASK_REAP_STUCK_JOBS,
                "schedule": settings.reaper_interval_seconds,
                "options": {"expires": settings.reaper_interval_seconds},
            },
            "shred-keys": {
                "task": TASK_SHRED_KEYS,
                "schedule": settings.shred_interval_seconds,
                "options": {"expires": settings.shred_interval_seconds},
            },
        },
    )
    return app


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.worker_init.connect
def _create_broker_tables(**_: Any) -> None:
    # Before the consumer connects: workers started together on a fresh database would race
    # to create the embedded broker's tables (service.queue.broker_tables).
    from service.queue.broker_tables import ensure_broker_tables
    from service.queue.client import broker_url

    ensure_broker_tables(broker_url(get_settings()))


@signals.worker_ready.connect
def _announce_presence(sender: Any = None, **_: Any) -> None:
    # /readyz counts live workers by this connection; it closes when the main process dies.
    from service.db.session import database_url
    from service.queue.presence import announce_worker

    announce_worker(database_url(get_settings()), str(getattr(sender, "hostname", "")))
    # A worker that (re)starts reaps at once: jobs whose holder died with the previous worker
    # and messages lost with it are sent again now, not at the next tick.
    celery_app.send_task(TASK_REAP_STUCK_JOBS, queue=QUEUE_REQUESTS)
    # This worker host registers, heartbeats and deletes its copies of erased weights (its
    # main process: the folder is the host's, whichever child wrote it).
    from service.finetune.hosts import HostLoop

    HostLoop(get_settings(), "worker").start()


@signals.worker_process_init.connect
def _forget_inherited_connections(**_: Any) -> None:
    from workers.pool import forget_inherited_connections

    forget_inherited_connections()


@signals.worker_process_init.connect
def _warm_verifier_embedder(**_: Any) -> None:
    # Loading all-MiniLM-L6-v2 takes seconds: do it when the process starts, in the background,
    # so that the first erasure request's rules still go live within seconds of approval.
    from service.rules.runtime import embedder

    threading.Thread(target=embedder, args=("minilm",), daemon=True).start()


@signals.task_postrun.connect
def _release_leases(**_: Any) -> None:
    from service.jobs.leases import release_all_leases

    release_all_leases()


@signals.task_prerun.connect
def _bind_correlation_id(task: Any = None, **_: Any) -> None:
    header = getattr(task.request, "correlation_id", None) if task is not None else None
    correlation_id.set(header or (task.request.id if task is not None else "-"))


celery_app = create_celery_app()

# Task modules use shared_task, bound to the app above once imported.
from workers.tasks import (  # noqa: E402, F401
    dispatch,
    exact,
    finetune,
    planning,
    reaper,
    requests,
    rules,
)
