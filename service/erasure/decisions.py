"""Identity verification and deadline extensions of an erasure request. Services flush only."""

from __future__ import annotations

import calendar
from datetime import datetime

from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.errors import conflict, invalid
from service.db.base import utcnow
from service.db.enums import TERMINAL_REQUEST_STATUSES, NoteKind, RequestStatus
from service.db.tables import ErasureRequest
from service.erasure.notes import digest_details, keep_note

# The vocabularies of a request's decisions: its legal ground, how the requester's identity was
# checked, and why a request was rejected. Codes are stored; these words are shown.
LEGAL_GROUNDS: dict[str, str] = {
    "a": "Art. 17(1)(a): the data are no longer necessary for their purpose",
    "b": "Art. 17(1)(b): consent withdrawn, no other legal ground",
    "c": "Art. 17(1)(c): objection under Art. 21, no overriding legitimate grounds",
    "d": "Art. 17(1)(d): the data were processed unlawfully",
    "e": "Art. 17(1)(e): erasure required by a legal obligation",
    "f": "Art. 17(1)(f): data of a child collected for information society services",
}

REJECTION_REASONS: dict[str, str] = {
    "identity_not_verified": "The requester's identity could not be verified (Art. 12(6))",
    "manifestly_unfounded": "Manifestly unfounded or excessive (Art. 12(5))",
    "freedom_of_expression": "Freedom of expression and information (Art. 17(3)(a))",
    "legal_obligation": "Compliance with a legal obligation (Art. 17(3)(b))",
    "public_interest_health": "Public interest in public health (Art. 17(3)(c))",
    "archiving_research": "Archiving, research or statistics (Art. 17(3)(d))",
    "legal_claims": "Establishment, exercise or defence of legal claims (Art. 17(3)(e))",
    "no_data_held": "No personal data of this subject are held",
    "other": "Other (described in the details)",
}

VERIFICATION_METHODS: dict[str, str] = {
    "id_document": "Identity document checked",
    "account_login": "Signed-in account of the data subject",
    "email_confirmation": "Confirmation from the e-mail address on record",
    "knowledge_based": "Questions only the data subject can answer",
    "representative": "Authorised representative with a mandate",
}

# GDPR Art. 12(3): "extended by two further months where necessary".
MAX_EXTENSION_MONTHS = 2


def add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def verify_identity(
    session: Session, request: ErasureRequest, method: str, reference: str, actor: str
) -> None:
    """Record how the requester's identity was checked; approval needs it when required."""
    if method not in VERIFICATION_METHODS:
        raise invalid("unknown_verification_method", "this verification method is not known")
    if request.status != RequestStatus.received:
        raise conflict(
            "invalid_transition", "identity can only be verified before the request is decided"
        )
    if request.identity_verified_at is not None:
        raise conflict("already_verified", "the requester's identity is already verified")
    request.identity_method = method
    request.identity_verified_at = utcnow()
    request.identity_verified_by = actor
    session.flush()
    event = append_event(
        session,
        actor=actor,
        action="request.identity_verified",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        # The reference may point at an identity document: kept encrypted beside the event,
        # shown back to the DPO; the log keeps only its keyed hash.
        details={
            "method": method,
            **digest_details(request, NoteKind.identity_reference, reference),
        },
    )
    keep_note(session, request, NoteKind.identity_reference, reference, actor, event)


def extend_deadline(
    session: Session, request: ErasureRequest, months: int, reason: str, actor: str
) -> None:
    """Move ``due_at`` by whole months, at most two in all, with a reason (Art. 12(3))."""
    if request.status in TERMINAL_REQUEST_STATUSES:
        raise conflict("invalid_transition", "a closed request's deadline cannot be extended")
    if months < 1 or request.extended_months + months > MAX_EXTENSION_MONTHS:
        raise invalid(
            "extension_too_long",
            "the deadline can be extended by at most two months in all",
            already_extended_months=request.extended_months,
        )
    previous = request.due_at
    request.due_at = add_months(previous, months)
    request.extended_months += months
    session.flush()
    event = append_event(
        session,
        actor=actor,
        action="request.deadline_extended",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details={
            "months": months,
            "previous_due_at": previous.isoformat(),
            "due_at": request.due_at.isoformat(),
            **digest_details(request, NoteKind.extension_reason, reason),
        },
    )
    keep_note(session, request, NoteKind.extension_reason, reason, actor, event)
