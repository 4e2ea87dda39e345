"""A DPO's own words on a request (the identity check's case number, a filing note, the reasons
for approving, rejecting, cancelling or extending), kept so they can be shown back.

The text is stored sealed under the request's data key (``seal_request_text`` /
``open_request_text``), one row per text, beside the audit event it explains. The audit log
keeps only a keyed hash of the text under a sub-key of the same data key (never a plain SHA-256
that anyone could test guesses against). Once the request's keys are destroyed
(``service.erasure.shredding``) neither the text nor a guess at it can be checked any more.
These functions flush; the caller commits.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from service.audit import append_event
from service.core.config import Settings
from service.core.keys import KeyDestroyed
from service.core.security import keyed_digest, open_sealed, seal_for
from service.db.enums import NoteKind
from service.db.session import settings_of
from service.db.tables import AuditEvent, ErasureRequest, RequestNote

# Longest DPO text kept: the console's and the API's fields stop at 2,000 characters.
MAX_TEXT = 2000

# The event each kind of text belongs to, and the detail that carries its keyed hash there.
DIGEST_FIELD: dict[NoteKind, str] = {
    NoteKind.filing_note: "note_hmac",
    NoteKind.identity_reference: "reference_hmac",
    NoteKind.approval_note: "reason_hmac",
    NoteKind.rejection_details: "reason_hmac",
    NoteKind.cancellation_reason: "reason_hmac",
    NoteKind.extension_reason: "reason_hmac",
}

LABELS: dict[NoteKind, str] = {
    NoteKind.filing_note: "Note at filing",
    NoteKind.identity_reference: "Identity check reference",
    NoteKind.approval_note: "Approval note",
    NoteKind.rejection_details: "Rejection details",
    NoteKind.cancellation_reason: "Cancellation reason",
    NoteKind.extension_reason: "Extension reason",
}


def _settings(request: ErasureRequest | None = None) -> Settings:
    # The decisions that record these texts are shared with the API and take no settings: the
    # settings bound to the request's session (the API's, a worker's), else the process's.
    return settings_of(object_session(request) if request is not None else None)


def seal_request_text(request: ErasureRequest, text: str) -> bytes:
    """Seal one DPO text of ``request`` under the request's data key."""
    return seal_for(_settings(request), request.key_id, text.encode())


def open_request_text(request: ErasureRequest, blob: bytes) -> str:
    return open_sealed(_settings(request), blob).decode()


def text_digest(text: str, purpose: str = "dpo-text") -> str:
    """A keyed hash under the service's secret key (texts that belong to no request)."""
    return keyed_digest(_settings(), None, purpose, text)


def request_digest(request: ErasureRequest, text: str) -> str:
    """A keyed hash of a request's text under its data key: unverifiable once destroyed."""
    return keyed_digest(_settings(request), request.key_id, "dpo-text", text)


def clean_text(text: str) -> str:
    return text.strip()[:MAX_TEXT]


def digest_details(request: ErasureRequest, kind: NoteKind, text: str) -> dict[str, str]:
    """What the audit event records about the text: its keyed hash, under the kind's name."""
    clean = clean_text(text)
    return {DIGEST_FIELD[kind]: request_digest(request, clean)} if clean else {}


def keep_note(
    session: Session,
    request: ErasureRequest,
    kind: NoteKind,
    text: str,
    author: str,
    event: AuditEvent,
) -> RequestNote | None:
    """Store ``text`` (if any) encrypted, linked to the event that carries its keyed hash."""
    clean = clean_text(text)
    if not clean:
        return None
    note = RequestNote(
        id=uuid.uuid4(),
        request_id=request.id,
        kind=kind,
        text_encrypted=seal_request_text(request, clean),
        author=author,
        audit_seq=event.seq,
    )
    session.add(note)
    session.flush()
    return note


def add_note(
    session: Session, request: ErasureRequest, kind: NoteKind, text: str, author: str
) -> RequestNote | None:
    """A text that comes with no decision of its own (the note at filing): its own event."""
    if not clean_text(text):
        return None
    event = append_event(
        session,
        actor=author,
        action="request.note_added",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details={"kind": kind.value, **digest_details(request, kind, text)},
    )
    return keep_note(session, request, kind, text, author, event)


@dataclass(frozen=True)
class ShownNote:
    kind: NoteKind
    label: str
    text: str
    author: str
    at: datetime
    audit_seq: int
    # The text hashes to what its audit event recorded (False: text or log changed since).
    matches_log: bool
    # The request's keys were destroyed: the text is gone for good (``text`` says so).
    destroyed: bool = False


def notes_of(session: Session, request: ErasureRequest) -> list[ShownNote]:
    """The request's texts, decrypted, each checked against the keyed hash in its event."""
    rows = session.execute(
        select(RequestNote, AuditEvent.details)
        .join(AuditEvent, AuditEvent.seq == RequestNote.audit_seq)
        .where(RequestNote.request_id == request.id)
        .order_by(RequestNote.audit_seq, RequestNote.created_at)
    ).all()
    return [_shown(request, note, details or {}) for note, details in rows]


def _shown(request: ErasureRequest, note: RequestNote, details: dict[str, object]) -> ShownNote:
    destroyed = False
    try:
        text = open_request_text(request, note.text_encrypted)
    except KeyDestroyed:
        destroyed = True
        text = "Destroyed with the request's encryption key when its retention ended."
    recorded = details.get(DIGEST_FIELD[note.kind])
    # A note written before the request had a key of its own (sealed since by
    # ``lethe keys seal-existing``) has its hash under the service's secret key in its event.
    expected = [request_digest(request, text), text_digest(text)] if not destroyed else []
    matches = recorded is not None and any(
        hmac.compare_digest(str(recorded), digest) for digest in expected
    )
    return ShownNote(
        kind=note.kind,
        label=LABELS[note.kind],
        text=text,
        author=note.author,
        at=note.created_at,
        audit_seq=note.audit_seq,
        matches_log=matches,
        destroyed=destroyed,
    )
