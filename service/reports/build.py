"""Audit reports, built only from the audit log: per request and per period, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import cast, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import Session

from service.audit.anchor import Anchor
from service.audit.chain import ROW_COLUMNS
from service.audit.verify import export_block, verify_log
from service.db.base import utcnow
from service.db.enums import RequestStatus
from service.db.tables import AuditEvent, Certificate
from service.erasure.certificates import chained_bodies, matches_chain
from service.erasure.deadlines import is_overdue_at
from service.erasure.lifecycle import REQUEST_EVENTS
from service.reports.csvsafe import neutralise

CSV_COLUMNS = [
    "seq",
    "occurred_at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "request_id",
    "details",
    "prev_hash",
    "hash",
]


def event_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": str(event.request_id) if event.request_id else None,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


_STATUS_OF_EVENT = {event: status.value for status, event in REQUEST_EVENTS.items()}
_CLOSING_EVENTS = {
    REQUEST_EVENTS[s]
    for s in (
        RequestStatus.completed,
        RequestStatus.failed,
        RequestStatus.rejected,
        RequestStatus.cancelled,
    )
}


def _summary(events: list[AuditEvent], now: datetime) -> dict[str, Any]:
    """What happened to a request, read back from its events alone."""
    summary: dict[str, Any] = {"status": None, "certificates": []}
    closed_at: datetime | None = None
    current: dict[str, Any] = {}
    for e in events:
        if e.action == "request.received":
            summary["subject_ref"] = e.details.get("subject_ref")
            summary["received_at"] = e.occurred_at.isoformat()
            summary["due_at"] = e.details.get("due_at")
            summary["scope"] = e.details.get("scope")
            summary["legal_ground"] = e.details.get("legal_ground")
        if e.action == "request.deadline_extended":
            # GDPR Art. 12(3): the extended due date is the one the request is held to.
            summary["due_at"] = e.details.get("due_at")
            summary.setdefault("extensions", []).append(
                {"months": e.details.get("months"), "due_at": e.details.get("due_at")}
            )
        if e.action in _STATUS_OF_EVENT:
            summary["status"] = _STATUS_OF_EVENT[e.action]
        if e.action in _CLOSING_EVENTS:
            closed_at = e.occurred_at
            summary["closed_at"] = e.occurred_at.isoformat()
        if e.action == "request.completed":
            summary["completed_at"] = e.occurred_at.isoformat()
            summary["outcome"] = e.details.get("outcome", "erased")
        if e.action == "certificate.issued":
            certificate = e.details.get("certificate") or {}
            summary["certificates"].append(certificate)
            # The last one issued for a model supersedes any before it.
            current[str(certificate.get("model"))] = certificate
    summary["current_certificates"] = [current[m] for m in sorted(current)]
    if summary.get("due_at"):
        due = datetime.fromisoformat(summary["due_at"])
        summary["overdue"] = is_overdue_at(due, closed_at, now)
    return summary


def _chain_and_anchor(session: Session, anchor: Anchor | None) -> dict[str, Any]:
    """The one verification (chain, event MACs, every stored checkpoint; incremental from the
    last verified head), and (when signing is configured) a signed checkpoint of the verified
    head, made only if everything verified."""
    verdict = verify_log(session, anchor, incremental=True)
    block: dict[str, Any] = {"chain": verdict.as_dict()}
    if anchor is not None:
        block["anchor"] = export_block(session, anchor, verdict)
    return block


def request_report(
    session: Session, request_id: uuid.UUID, anchor: Anchor | None = None
) -> dict[str, Any]:
    events = list(
        session.scalars(
            select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.seq)
        )
    )
    return {
        "report": "erasure_request",
        "request_id": str(request_id),
        "summary": _summary(events, utcnow()),
        "events": [event_dict(e) for e in events],
        "certificate_check": certificate_check(session, request_id),
        **_chain_and_anchor(session, anchor),
    }


def certificate_check(session: Session, request_id: uuid.UUID) -> dict[str, Any]:
    """The certificates table (a cache) against the certificates the audit log carries; the
    report itself shows the log's."""
    rows = list(
        session.scalars(
            select(Certificate)
            .where(Certificate.request_id == request_id)
            .order_by(Certificate.audit_seq)
        )
    )
    chained = chained_bodies(session, rows)
    differing = [c.audit_seq for c in rows if not matches_chain(c, chained.get(c.audit_seq))]
    return {"ok": not differing, "checked": len(rows), "differing_audit_seqs": differing}


def period_report(
    session: Session,
    since: datetime | None,
    until: datetime | None,
    anchor: Anchor | None = None,
) -> dict[str, Any]:
    # Plain rows, not ORM objects: a period may hold 100,000 events (they read alike).
    stmt = select(*ROW_COLUMNS).order_by(AuditEvent.seq)
    if since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    events: list[Any] = list(session.execute(stmt))
    completed = [e for e in events if e.action == "request.completed"]
    return {
        "requests": _requests_in(session, events, since, until),
        "report": "period",
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "requests_received": sum(e.action == "request.received" for e in events),
        "requests_completed": len(completed),
        "requests_completed_overdue": sum(bool(e.details.get("overdue")) for e in completed),
        "certificates_issued": sum(e.action == "certificate.issued" for e in events),
        "events": [event_dict(e) for e in events],
        **_chain_and_anchor(session, anchor),
    }


def _requests_in(
    session: Session,
    events: list[Any],
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Each request the period's events touch, summarised from its whole history in the log
    (so its due date and closing are known even when they fall outside the period): one query
    for all of them."""
    ids = sorted({e.request_id for e in events if e.request_id is not None}, key=str)
    histories: dict[uuid.UUID, list[Any]] = {i: [] for i in ids}
    if ids:
        # The period's own events are at hand: read only the ones outside it.
        bounds = [
            *([AuditEvent.occurred_at < since] if since is not None else []),
            *([AuditEvent.occurred_at >= until] if until is not None else []),
        ]
        outside: Iterable[Any] = (
            session.execute(
                select(*ROW_COLUMNS).where(
                    AuditEvent.request_id == func.any(cast(ids, ARRAY(PG_UUID(as_uuid=True)))),
                    or_(*bounds),
                )
            )
            if bounds
            else []
        )
        for event in sorted([*events, *outside], key=lambda e: e.seq):
            if event.request_id in histories:
                histories[event.request_id].append(event)
    now = utcnow()
    out = []
    for request_id in ids:
        summary = _summary(histories[request_id], now)
        out.append(
            {
                "request_id": str(request_id),
                "status": summary["status"],
                "due_at": summary.get("due_at"),
                "closed_at": summary.get("closed_at"),
                "overdue": summary.get("overdue"),
            }
        )
    return out


def events_csv(events: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for event in events:
        row = dict(event)
        row["details"] = json.dumps(event["details"], sort_keys=True)
        writer.writerow({k: neutralise(v) for k, v in row.items()})
    return out.getvalue()


def checkpoint_headers(report: dict[str, Any]) -> dict[str, str]:
    """A CSV export carries its verification and signed checkpoint in headers (the body stays
    plain CSV)."""
    chain = report["chain"]
    headers = {
        "x-audit-verified": "true" if chain["ok"] else "false",
        "x-audit-verification": json.dumps(
            {k: chain[k] for k in ("ok", "mode", "first_broken_seq", "kind", "last_seq")},
            sort_keys=True,
            separators=(",", ":"),
        ),
    }
    checkpoint = (report.get("anchor") or {}).get("checkpoint")
    if checkpoint:
        headers["x-audit-checkpoint"] = json.dumps(
            checkpoint, sort_keys=True, separators=(",", ":")
        )
    return headers
