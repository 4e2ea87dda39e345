"""A period report summarises each request its events touch from the request's whole history,
events before and after the period included (read in one query)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from service.audit import append_event
from service.db.base import utcnow
from service.reports.build import period_report


def _event(session: Session, action: str, request_id: uuid.UUID, **details: object) -> None:
    append_event(
        session,
        actor="test",
        action=action,
        target_type="request",
        target_id=str(request_id),
        request_id=request_id,
        details=dict(details),
    )


def test_requests_are_summarised_from_their_whole_history(session: Session) -> None:
    inside, elsewhere = uuid.uuid4(), uuid.uuid4()
    _event(session, "request.received", inside, due_at="2030-01-01T00:00:00+00:00")
    _event(session, "request.received", elsewhere)
    since = utcnow()
    _event(session, "request.approved", inside)
    until = utcnow()
    _event(session, "request.completed", inside, outcome="erased")
    report = period_report(session, since, until)
    assert [e["action"] for e in report["events"]] == ["request.approved"]
    (summary,) = report["requests"]
    assert summary["request_id"] == str(inside)
    assert summary["status"] == "completed" and summary["closed_at"] is not None
    assert summary["due_at"] == "2030-01-01T00:00:00+00:00"
