"""The overdue rule: one table of cases, the same answer from a request's detail, the list
filter and the period report (built from the audit log alone)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from service.db.base import utcnow
from service.db.tables import ErasureRequest
from service.erasure.deadlines import is_overdue_at
from service.erasure.filing import NewRequest, file_request
from service.erasure.lifecycle import (
    approve_request,
    cancel_request,
    finish_request_if_done,
    reject_request,
    start_request,
)
from service.reports.build import period_report
from tests.support.api import SentTasks, auth

# (case, days since filing, what happens today, overdue?) with a 30-day deadline.
CASES = [
    ("open, within the deadline", 3, None, False),
    ("open, past the deadline", 45, None, True),
    ("completed in time", 10, "complete", False),
    ("completed late", 45, "complete", True),
    ("cancelled in time", 5, "cancel", False),
    ("cancelled after the due date", 45, "cancel", True),
    ("rejected in time", 2, "reject", False),
    ("rejected late", 40, "reject", True),
]


def test_the_rule() -> None:
    due = datetime(2026, 1, 31, tzinfo=utcnow().tzinfo)
    assert not is_overdue_at(due, due, due)  # answered on the due date itself: in time
    assert is_overdue_at(due, due + timedelta(seconds=1), due)
    assert is_overdue_at(due, None, due + timedelta(seconds=1))
    assert not is_overdue_at(due, due - timedelta(days=1), due + timedelta(days=9))


def _file(session: Session, settings: Settings, days_ago: int, name: str) -> ErasureRequest:
    filed_at = utcnow() - timedelta(days=days_ago)
    with pytest.MonkeyPatch.context() as m:
        m.setattr("service.erasure.filing.utcnow", lambda: filed_at)
        request, _ = file_request(
            session,
            settings,
            NewRequest(f"deadline-{name}", "art 17", None, None, None),
            actor="test",
        )
    return request


def _close(session: Session, settings: Settings, request: ErasureRequest, how: str | None) -> None:
    if how == "complete":
        approve_request(session, settings, request, "test", "verified")
        start_request(session, request, "test", [])
        assert finish_request_if_done(session, request, "test")  # no model in scope
    elif how == "cancel":
        cancel_request(session, request, "test", "withdrawn")
    elif how == "reject":
        reject_request(session, request, "test", "manifestly unfounded")


def test_detail_list_and_period_report_agree(
    app_client: TestClient,
    tokens: dict[str, str],
    factory: sessionmaker[Session],
    settings: Settings,
    sent_tasks: SentTasks,
) -> None:
    ids: dict[str, str] = {}
    with factory() as session, session.begin():
        for i, (case, days_ago, how, _) in enumerate(CASES):
            request = _file(session, settings, days_ago, str(i))
            _close(session, settings, request, how)
            ids[case] = str(request.id)
    h = auth(tokens["auditor"])
    listed = app_client.get("/v1/requests", params={"overdue": "true", "limit": 500}, headers=h)
    flagged = {item["id"] for item in listed.json()["items"]}
    not_listed = app_client.get(
        "/v1/requests", params={"overdue": "false", "limit": 500}, headers=h
    )
    unflagged = {item["id"] for item in not_listed.json()["items"]}
    with factory() as session:
        report = {
            r["request_id"]: r["overdue"] for r in period_report(session, None, None)["requests"]
        }
    for case, _, _, expected in CASES:
        rid = ids[case]
        detail = app_client.get(f"/v1/requests/{rid}", headers=h).json()
        assert detail["overdue"] is expected, case
        assert (rid in flagged) is expected and (rid in unflagged) is not expected, case
        assert report[rid] is expected, case
