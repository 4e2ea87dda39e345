"""What a request's report carries beyond the audit log: the request's reference and the DPO's
ticket, its outcome, the DPO's own words (decrypted, each checked against the keyed hash its
event recorded) and the actors' display names. Used by the console's and the API's report
downloads alike, for the roles that may read reports (dpo, auditor, admin)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.db.tables import ErasureRequest
from service.erasure.notes import notes_of
from service.erasure.references import reference
from service.reports.actors import display_names


def with_words(session: Session, request: ErasureRequest, report: dict[str, Any]) -> dict[str, Any]:
    report["reference"] = reference(request)
    report["ticket_ref"] = request.ticket_ref
    report["outcome"] = request.outcome.value if request.outcome else None
    report["notes"] = [
        {
            "kind": n.kind.value,
            "label": n.label,
            "text": n.text,
            "audit_seq": n.audit_seq,
            "matches_log": n.matches_log,
            "destroyed": n.destroyed,
        }
        for n in notes_of(session, request)
    ]
    report["actors"] = display_names(session, (e["actor"] for e in report["events"]))
    return report
