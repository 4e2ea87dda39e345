"""The reaper re-sends work nobody took, backing off while it stays untaken: a message queued
behind a long retrain is not copied every reaper pass (service.queue.resends)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.tables import Resend
from service.queue.names import TASK_PROCESS_REQUEST, TASK_RETRAIN_SHARD
from service.queue.resends import MAX_BACKOFF_S, forget_old_resends, resend_due
from tests.support.api import SentTasks, auth
from tests.support.sample_data import MODEL_BODY

BASE_S = 15.0


def test_resends_back_off_doubling_up_to_the_cap(session: Session) -> None:
    target, other, t0 = uuid.uuid4(), uuid.uuid4(), utcnow()

    def due(seconds: float, who: uuid.UUID = target) -> bool:
        return resend_due(session, "lethe.task", who, BASE_S, t0 + timedelta(seconds=seconds))

    assert due(0)  # the first re-send goes at once
    assert not due(1) and not due(2 * BASE_S - 1)
    assert due(2 * BASE_S)  # then 30 s after it
    assert not due(2 * BASE_S + 4 * BASE_S - 1)
    assert due(2 * BASE_S + 4 * BASE_S)  # then 60 s after that
    assert due(0, other)  # another target has its own record
    # Many re-sends later the wait stops growing at the cap.
    session.execute(text("UPDATE resends SET sends = 40 WHERE target_id = :t"), {"t": target})
    last = 6 * BASE_S
    assert not due(last + MAX_BACKOFF_S - 1)
    assert due(last + MAX_BACKOFF_S)
    # Records of long-finished work are dropped.
    assert forget_old_resends(session, t0 + timedelta(days=30)) == 2
    assert session.scalar(select(func.count()).select_from(Resend)) == 0


def test_reaper_resends_an_untaken_job_once_per_backoff(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    from workers.tasks.reaper import reap_stuck_jobs
    from workers.tasks.requests import process_request

    rid = app_client.post(
        "/v1/requests",
        json={"subject_id": "S-0000", "reason": "art 17", "scope": [MODEL_BODY["name"]]},
        headers=auth(tokens["dpo"]),
    ).json()["id"]
    app_client.post(
        f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=auth(tokens["dpo"])
    )
    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    assert process_request(*args) == "planned"
    sent_tasks.sent.clear()  # the retrain's message is "queued behind a long task": never run
    session.execute(text("UPDATE jobs SET created_at = now() - interval '1 hour'"))
    session.commit()

    def reap() -> int:
        resent = reap_stuck_jobs()["resent"]
        assert sent_tasks.names() == [TASK_RETRAIN_SHARD] * resent
        sent_tasks.sent.clear()
        return int(resent)

    assert reap() == 1  # possibly lost: sent again
    assert [reap() for _ in range(5)] == [0] * 5  # not on every pass
    session.execute(text("UPDATE resends SET last_sent_at = now() - interval '31 seconds'"))
    session.commit()
    assert reap() == 1  # once the backoff (30 s after the first re-send) has passed
    assert reap() == 0
