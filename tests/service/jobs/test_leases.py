"""A redelivered task takes over a job whose holder's process is gone, at once (no stale
heartbeat window), and never one whose holder is alive. "Another process" is another database
connection holding the job's lease, as a worker does; closing it is that worker dying."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.audit import verify_chain
from service.db.base import utcnow
from service.db.tables import AuditEvent, Job
from service.jobs.leases import _key
from service.queue.names import TASK_PROCESS_REQUEST, TASK_RETRAIN_SHARD
from tests.support.api import SentTasks, auth
from tests.support.exact import a_trained_subject, file_and_approve
from tests.support.tasks import drain


def _dies(conn: psycopg.Connection[Any], session: Session) -> None:
    """The other worker's process dies: its connection closes, and its backend (with the lease)
    goes away a moment later; wait for that moment rather than race it."""
    pid = conn.info.backend_pid
    conn.close()
    deadline = time.monotonic() + 30
    # pg_stat_activity is a per-transaction snapshot: clear it before every look.
    while session.execute(
        text("SELECT pg_stat_clear_snapshot(), 1 FROM pg_stat_activity WHERE pid = :pid"),
        {"pid": pid},
    ).first():
        assert time.monotonic() < deadline, "the closed connection's backend did not exit"
        time.sleep(0.05)


@pytest.fixture
def other_worker(database_url: str) -> Any:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    conn = psycopg.connect(dsn, autocommit=True)
    yield conn
    conn.close()


def test_redelivery_reclaims_a_dead_holders_job_at_once(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
    other_worker: psycopg.Connection[Any],
) -> None:
    from workers.tasks.exact import retrain_shard
    from workers.tasks.requests import process_request

    rid = file_and_approve(app_client, tokens, a_trained_subject(session))
    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    process_request(*args)
    [job_args] = sent_tasks.pop(TASK_RETRAIN_SHARD)
    job_id = uuid.UUID(job_args[0])
    # Another worker claimed it and holds its lease, with a fresh heartbeat.
    other_worker.execute("SELECT pg_advisory_lock(%s)", (_key(job_id),))
    job = session.get_one(Job, job_id)
    job.status, job.attempts = "running", 1
    session.commit()
    # Alive: a redelivery leaves the job alone.
    assert retrain_shard(*job_args) == "not_claimed"
    # That worker dies (kill -9 closes its connection): the next delivery takes over at once.
    _dies(other_worker, session)
    assert retrain_shard(*job_args) == "done"
    drain(sent_tasks)
    session.expire_all()
    req = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert req["status"] == "completed"
    actions = [
        e.action
        for e in session.scalars(select(AuditEvent).where(AuditEvent.target_id == str(job_id)))
    ]
    assert actions.count("job.reclaimed") == 1
    assert session.get_one(Job, job_id).attempts == 2
    assert verify_chain(session).ok


def test_reaper_requeues_a_dead_holders_job_without_waiting_for_staleness(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
    other_worker: psycopg.Connection[Any],
) -> None:
    from workers.tasks.reaper import reap_stuck_jobs
    from workers.tasks.requests import process_request

    file_and_approve(app_client, tokens, a_trained_subject(session))
    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    process_request(*args)
    [job_args] = sent_tasks.pop(TASK_RETRAIN_SHARD)
    job_id = uuid.UUID(job_args[0])
    other_worker.execute("SELECT pg_advisory_lock(%s)", (_key(job_id),))
    job = session.get_one(Job, job_id)
    job.status, job.attempts, job.heartbeat_at = "running", 1, utcnow()
    session.commit()
    assert reap_stuck_jobs()["requeued"] == 0  # heartbeat fresh, holder alive
    _dies(other_worker, session)
    assert reap_stuck_jobs()["requeued"] == 1  # holder gone: requeued now, not in 10 minutes
    assert sent_tasks.pop(TASK_RETRAIN_SHARD) == [job_args]
    session.expire_all()
    assert session.get_one(Job, job_id).status == "pending"
