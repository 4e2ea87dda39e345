"""What the console's pages show, read from the database (no writes here)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from service.api.routes_requests import request_out
from service.api.schemas import ActionOut, RequestOut
from service.db.enums import TERMINAL_REQUEST_STATUSES, RequestStatus, Role
from service.db.tables import ErasureRequest, MlModel
from service.erasure.deadlines import closed_at, days_left, is_overdue, overdue_clause
from service.erasure.decisions import LEGAL_GROUNDS, REJECTION_REASONS, VERIFICATION_METHODS
from service.erasure.filing import request_timeline
from service.erasure.notes import ShownNote, notes_of
from service.erasure.references import number_in, reference
from service.planner.discovery import Finding, discover, holds_nothing
from service.reports.actors import display_names
from service.reports.build import event_dict
from service.reports.plain import (
    Deadline,
    certificate_status,
    certificate_words,
    deadline,
    engineer_facts,
    event_words,
    outcome_words,
)
from service.reports.words import describe_event

PAGE_SIZE = 20
OPEN_STATUSES = [s.value for s in RequestStatus if s not in TERMINAL_REQUEST_STATUSES]
# Who may read a DPO's own words (case numbers, notes, reasons): not ML engineers.
NOTE_READERS = (Role.dpo, Role.auditor)


@dataclass
class Filters:
    status: str = "open"
    model: str = ""
    overdue: str = ""
    since: str = ""
    until: str = ""
    q: str = ""
    page: int = 1

    def query(self) -> dict[str, str]:
        values = {
            "status": self.status,
            "model": self.model,
            "overdue": self.overdue,
            "since": self.since,
            "until": self.until,
            "q": self.q,
        }
        return {k: v for k, v in values.items() if v}


def _day(text: str) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
    except ValueError:
        return None


def _search(stmt: Select[ErasureRequest], q: str) -> Select[ErasureRequest]:
    """The request's reference (LR-2026-00042 or 42) or its ticket reference."""
    words = q.strip()
    if not words:
        return stmt
    number = number_in(words)
    ticket = ErasureRequest.ticket_ref.ilike(
        "%" + words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    )
    return stmt.where(or_(ticket, ErasureRequest.number == number) if number else ticket)


def _filtered(f: Filters) -> Select[ErasureRequest]:
    stmt = _search(select(ErasureRequest), f.q)
    if f.q.strip() and f.status == "open":
        pass  # a search looks through every status unless one is chosen
    elif f.status == "open":
        stmt = stmt.where(ErasureRequest.status.in_(OPEN_STATUSES))
    elif f.status in RequestStatus.__members__:
        stmt = stmt.where(ErasureRequest.status == f.status)
    elif f.status == "no_data_held":
        stmt = stmt.where(ErasureRequest.outcome == "no_data_held")
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
    reference: str
    ticket_ref: str | None
    status: str
    outcome: str
    received_at: datetime
    due_at: datetime
    days_left: int
    overdue: bool
    scope: str
    deadline: Deadline


def request_deadline(r: ErasureRequest, now: datetime | None = None) -> Deadline:
    return deadline(r.status.value, r.due_at, closed_at(r), is_overdue(r, now), now)


def _row(r: ErasureRequest) -> Row:
    return Row(
        r.id,
        reference(r),
        r.ticket_ref,
        r.status.value,
        outcome_words(r.status.value, r.outcome.value if r.outcome else None),
        r.received_at,
        r.due_at,
        days_left(r.due_at),
        is_overdue(r),
        "every model" if r.scope is None else ", ".join(r.scope),
        request_deadline(r),
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


def requests_of_subject(session: Session, ref: str, *, open_only: bool = False) -> list[Row]:
    stmt = select(ErasureRequest).where(ErasureRequest.subject_ref == ref)
    if open_only:
        stmt = stmt.where(ErasureRequest.status.in_(OPEN_STATUSES))
    rows = session.scalars(stmt.order_by(ErasureRequest.received_at.desc()).limit(100))
    return [_row(r) for r in rows]


@dataclass
class Step:
    """One event of the request's timeline, numbered 1, 2, 3… within the request."""

    number: int
    seq: int
    at: str
    words: str
    technical: str
    actor: str
    notes: list[ShownNote]
    bad: bool


@dataclass
class Detail:
    request: ErasureRequest
    reference: str
    out: RequestOut
    deadline: Deadline
    status_words: str
    legal_ground: str
    identity_method: str | None
    rejection: str | None
    notes: list[ShownNote] | None  # None: this role may not read them
    findings: list[Finding]
    held_nowhere: bool
    timeline: list[Step]
    certificates: list[dict[str, Any]]
    no_certificate: str | None
    others_open: list[Row]
    action_words: dict[str, str]  # model name → its action's status in words


def _timeline(
    session: Session, request: ErasureRequest, notes: list[ShownNote] | None
) -> list[Step]:
    events = [event_dict(e) for e in request_timeline(session, request.id)]
    names = display_names(session, (e["actor"] for e in events))
    by_seq: dict[int, list[ShownNote]] = {}
    for note in notes or []:
        by_seq.setdefault(note.audit_seq, []).append(note)
    return [
        Step(
            number=i,
            seq=e["seq"],
            at=e["occurred_at"],
            words=event_words(e),
            technical=describe_event(e),
            actor=names[e["actor"]],
            notes=by_seq.get(e["seq"], []),
            bad=str(e["action"]).endswith(("failed", "vacuum_failed")),
        )
        for i, e in enumerate(events, start=1)
    ]


def request_detail(session: Session, request: ErasureRequest, role: Role) -> Detail:
    out = request_out(session, request)
    readable = role == Role.admin or role in NOTE_READERS
    notes = notes_of(session, request) if readable else None
    findings = discover(session, request)
    others = [
        r
        for r in requests_of_subject(session, request.subject_ref, open_only=True)
        if r.id != request.id
    ]
    outcome = request.outcome.value if request.outcome else None
    return Detail(
        request=request,
        reference=reference(request),
        out=out,
        deadline=request_deadline(request),
        status_words=outcome_words(request.status.value, outcome),
        legal_ground=LEGAL_GROUNDS.get(request.legal_ground or "", "not recorded"),
        identity_method=VERIFICATION_METHODS.get(request.identity_method or ""),
        rejection=REJECTION_REASONS.get(request.rejection_code or ""),
        notes=notes,
        findings=findings,
        held_nowhere=holds_nothing(findings),
        timeline=_timeline(session, request, notes),
        certificates=[
            {
                "model": c.model,
                "kind": c.kind,
                "words": certificate_words(c.body),
                "facts": engineer_facts(c.body),
                "matches_audit_log": c.matches_audit_log,
                "audit_seq": c.audit_seq,
            }
            for c in out.certificates
        ],
        no_certificate=certificate_status(request.status.value, outcome, len(out.certificates)),
        others_open=others,
        action_words={a.model: action_status_words(a) for a in out.actions},
    )


def progress(session: Session, request: ErasureRequest) -> dict[str, Any]:
    out = request_out(session, request)
    return {
        "status": out.status,
        "actions": [
            {"model": a.model, "status": action_status_words(a), "progress": a.progress}
            for a in out.actions
        ],
    }


def action_status_words(action: ActionOut) -> str:
    """An action's status for the DPO: rules already screening answers are said so while
    their certificate is still being issued, and a deletion that keeps failing is named (the
    work bar is full while the request waits for it)."""
    if action.deletion_failures:
        return (
            "waiting: deleting the model's earlier saved copies has not worked yet "
            f"(tried {action.deletion_failures} time(s)); lethe keeps trying"
        )
    if action.rules_in_force_since is not None:
        return "rules in force, certificate pending"
    return action.status.replace("_", " ")
