"""What the console's pages show, read from the database (no writes here)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from service.api.routes_requests import request_out
from service.api.schemas import RequestOut
from service.db.base import utcnow
from service.db.enums import TERMINAL_REQUEST_STATUSES, RequestStatus
from service.db.tables import ErasureRequest, MlModel
from service.erasure.deadlines import is_overdue, overdue_clause
from service.erasure.decisions import LEGAL_GROUNDS, REJECTION_REASONS, VERIFICATION_METHODS
from service.erasure.filing import request_timeline
from service.reports.build import event_dict
from service.reports.words import certificate_facts, describe_event

PAGE_SIZE = 20
OPEN_STATUSES = [s.value for s in RequestStatus if s not in TERMINAL_REQUEST_STATUSES]


def days_left(request: ErasureRequest, now: datetime | None = None) -> int:
    return math.ceil((request.due_at - (now or utcnow())).total_seconds() / 86400)


@dataclass
class Filters:
    status: str = "open"
    model: str = ""
    overdue: str = ""
    since: str = ""
    until: str = ""
    page: int = 1

    def query(self) -> dict[str, str]:
        values = {
            "status": self.status,
            "model": self.model,
            "overdue": self.overdue,
            "since": self.since,
            "until": self.until,
        }
        return {k: v for k, v in values.items() if v}


def _day(text: str) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
    except ValueError:
        return None


def _filtered(f: Filters) -> Select[ErasureRequest]:
    stmt = select(ErasureRequest)
    if f.status == "open":
        stmt = stmt.where(ErasureRequest.status.in_(OPEN_STATUSES))
    elif f.status in RequestStatus.__members__:
        stmt = stmt.where(ErasureRequest.status == f.status)
    if f.model:
        # "Every model" is stored as JSON null (not SQL NULL) by the JSONB column.
        every = func.coalesce(func.jsonb_typeof(ErasureRequest.scope), "null") == "null"
        stmt = stmt.where(every | ErasureRequest.scope.contains([f.model]))
    late = overdue_clause()
    if f.overdue == "yes":
        stmt = stmt.where(late)
    elif f.overdue == "no":
        stmt = stmt.where(~late)
    since, until = _day(f.since), _day(f.until)
    if since is not None:
        stmt = stmt.where(ErasureRequest.received_at >= since)
    if until is not None:
        stmt = stmt.where(ErasureRequest.received_at < until + timedelta(days=1))
    return stmt


@dataclass
class Row:
    id: uuid.UUID
    subject_ref: str
    status: str
    received_at: datetime
    due_at: datetime
    days_left: int
    overdue: bool
    scope: str


def _row(r: ErasureRequest) -> Row:
    return Row(
        r.id,
        r.subject_ref,
        r.status,
        r.received_at,
        r.due_at,
        days_left(r),
        is_overdue(r),
        "every model" if r.scope is None else ", ".join(r.scope),
    )


@dataclass
class Listing:
    rows: list[Row]
    total: int
    page: int
    pages: int
    models: list[str] = field(default_factory=list)


def model_names(session: Session) -> list[str]:
    return list(session.scalars(select(MlModel.name).order_by(MlModel.name)))


def list_requests(session: Session, f: Filters) -> Listing:
    stmt = _filtered(f)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(max(1, f.page), pages)
    rows = session.scalars(
        stmt.order_by(ErasureRequest.due_at, ErasureRequest.received_at)
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    )
    return Listing([_row(r) for r in rows], total, page, pages, model_names(session))


def requests_of_subject(session: Session, ref: str) -> list[Row]:
    rows = session.scalars(
        select(ErasureRequest)
        .where(ErasureRequest.subject_ref == ref)
        .order_by(ErasureRequest.received_at.desc())
        .limit(100)
    )
    return [_row(r) for r in rows]


@dataclass
class Detail:
    request: ErasureRequest
    out: RequestOut
    days_left: int
    overdue: bool
    legal_ground: str
    identity_method: str | None
    rejection: str | None
    timeline: list[dict[str, Any]]
    certificates: list[dict[str, Any]]


def request_detail(session: Session, request: ErasureRequest) -> Detail:
    out = request_out(session, request)
    events = [event_dict(e) for e in request_timeline(session, request.id)]
    return Detail(
        request=request,
        out=out,
        days_left=days_left(request),
        overdue=is_overdue(request),
        legal_ground=LEGAL_GROUNDS.get(request.legal_ground or "", "not recorded"),
        identity_method=VERIFICATION_METHODS.get(request.identity_method or ""),
        rejection=REJECTION_REASONS.get(request.rejection_code or ""),
        timeline=[{**e, "words": describe_event(e)} for e in events],
        certificates=[
            {
                "model": c.model,
                "kind": c.kind,
                "words": c.plain_words,
                "facts": certificate_facts(c.body),
            }
            for c in out.certificates
        ],
    )


def progress(session: Session, request: ErasureRequest) -> dict[str, Any]:
    out = request_out(session, request)
    return {
        "status": out.status,
        "actions": [
            {"model": a.model, "status": a.status, "progress": a.progress} for a in out.actions
        ],
    }
