"""The deadline rule (GDPR Art. 12(3)): one definition of "overdue", used everywhere.

A request is overdue when it was answered after its due date, or is still unanswered and its
due date has passed. "Answered" is the moment it closed: completed or failed (``completed_at``),
rejected or cancelled (``decided_at``). Views of one request, the list filter (as SQL) and the
period report (from audit events) all derive from ``is_overdue_at``; tests/service/
test_deadlines.py checks that the three agree on one table of cases.
"""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import ColumnElement, case, func

from service.db.base import utcnow
from service.db.enums import RequestStatus
from service.db.tables import ErasureRequest

_CLOSED_BY_OUTCOME = (RequestStatus.completed, RequestStatus.failed)
_CLOSED_BY_DECISION = (RequestStatus.rejected, RequestStatus.cancelled)


def is_overdue_at(due_at: datetime, closed_at: datetime | None, now: datetime) -> bool:
    """The rule itself: answered (or, if still open, now) after the due date."""
    return (closed_at or now) > due_at


def days_left(due_at: datetime, now: datetime | None = None) -> int:
    """Whole days until the due date, rounded up (a deadline later today is "1 day left"; one
    passed earlier today is "0"): the one count the console and the PDF both show."""
    return math.ceil((due_at - (now or utcnow())).total_seconds() / 86400)


def closed_at(request: ErasureRequest) -> datetime | None:
    if request.status in _CLOSED_BY_OUTCOME:
        return request.completed_at
    if request.status in _CLOSED_BY_DECISION:
        return request.decided_at
    return None


def is_overdue(request: ErasureRequest, now: datetime | None = None) -> bool:
    return is_overdue_at(request.due_at, closed_at(request), now or utcnow())


def overdue_clause(now: datetime | None = None) -> ColumnElement[bool]:
    """``is_overdue`` as a SQL condition on erasure_requests, for filters and counts."""
    closed = case(
        (ErasureRequest.status.in_(_CLOSED_BY_OUTCOME), ErasureRequest.completed_at),
        (ErasureRequest.status.in_(_CLOSED_BY_DECISION), ErasureRequest.decided_at),
        else_=None,
    )
    moment = func.coalesce(closed, now or utcnow())
    return moment > ErasureRequest.due_at
