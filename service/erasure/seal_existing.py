"""Sealing the requests filed before per-request keys (``lethe keys seal-existing``).

A request filed before per-request data keys has no key (``key_id`` is NULL): its filing reason
is plain text in ``erasure_requests.reason``; its forget content, the DPO's notes and its rules
are sealed under the service-wide key; older requests also keep an identity check's reference
and the last decision's reason in plain columns, and a plain SHA-256 of what was filed. The
retention job cannot shred such a request (there is no key of its own to destroy), so its
person's data would be kept for ever, readable by whoever holds the service key.

``seal_request`` gives one such request its own data key and re-seals everything of it under
that key (the plain columns are emptied), with a ``request.keys_created`` audit event; from then
on the retention job shreds it like any other. It flushes only: the caller commits (the CLI,
per batch). It is safe to run twice and to kill: a request counts as done only once its
``key_id`` is set, in the same transaction as everything it re-sealed, and creating the key
keeps a key a killed run left in the key store.

What this cannot rewrite: audit events are append-only and hash-chained, so events written
before keyed digests keep a plain SHA-256 of a decision's reason or an identity reference
(``reason_sha256`` / ``reference_sha256``; ``legacy_digest_events`` counts them), and events
written before per-request keys keep keyed hashes under the service's secret key rather than
the request's key. Neither holds the text itself; both let whoever holds the input (and, for
the second, the service's secret) test a guess.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.keys import is_sealed, keys_for, request_key_id
from service.core.security import decrypt, keyed_digest, seal_for
from service.db.enums import NoteKind
from service.db.enums import RequestStatus as S
from service.db.tables import AuditEvent, ErasureRequest, RequestNote
from service.erasure.filing import legacy_payload_hash
from service.erasure.notes import DIGEST_FIELD, clean_text

# Re-seals a request's rules in every rule-set version that holds them (the rules live on a
# higher floor: service.rules.rulesets.reseal_rules_of_request); how many versions changed.
ResealRules = Callable[[Session, Settings, str], int]

# Audit details that hold a plain SHA-256 of a DPO's text (events written before keyed digests).
LEGACY_DIGESTS = ("reason_sha256", "reference_sha256")


@dataclass
class Sealed:
    """What ``seal_request`` re-sealed of one request (counts and column names, no content)."""

    request_id: uuid.UUID
    key_id: str
    sealed: list[str] = field(default_factory=list)
    notes: int = 0
    rule_set_versions: int = 0
    moved: list[str] = field(default_factory=list)


def _unsealed() -> Any:
    return ErasureRequest.key_id.is_(None)


def count_unsealed(session: Session) -> int:
    """Requests without a data key of their own."""
    return int(session.scalar(select(func.count()).where(_unsealed())) or 0)


def count_legacy_digest_events(session: Session) -> int:
    """Audit events carrying a plain SHA-256 of a DPO's text (append-only: they stay)."""
    has = or_(*(AuditEvent.details.has_key(name) for name in LEGACY_DIGESTS))
    return int(session.scalar(select(func.count()).select_from(AuditEvent).where(has)) or 0)


def next_unsealed(session: Session, limit: int) -> list[ErasureRequest]:
    """The next ``limit`` requests without a key, oldest first, locked (rows another run holds
    are skipped)."""
    stmt = (
        select(ErasureRequest)
        .where(_unsealed())
        .order_by(ErasureRequest.received_at, ErasureRequest.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))


def seal_request(
    session: Session,
    settings: Settings,
    request: ErasureRequest,
    actor: str,
    reseal_rules: ResealRules,
) -> Sealed:
    """Give ``request`` its own data key and re-seal all of it under that key (flushes)."""
    assert request.key_id is None
    key_id = request_key_id(request.id)
    keys_for(settings).create(key_id)  # kept if a killed run already made it
    done = Sealed(request.id, key_id)
    if request.reason is not None:
        request.reason_encrypted = seal_for(settings, key_id, request.reason.encode())
        request.reason = None
        done.sealed.append("reason")
    if request.forget_content is not None and not is_sealed(request.forget_content):
        plain = decrypt(settings, bytes(request.forget_content))
        request.forget_content = seal_for(settings, key_id, plain)
        done.sealed.append("forget_content")
    request.payload_hash = legacy_payload_hash(settings, request.payload_hash)
    done.sealed.append("payload_hash")
    for note in session.scalars(select(RequestNote).where(RequestNote.request_id == request.id)):
        if not is_sealed(note.text_encrypted):
            plain = decrypt(settings, bytes(note.text_encrypted))
            note.text_encrypted = seal_for(settings, key_id, plain)
            done.notes += 1
    done.rule_set_versions = reseal_rules(session, settings, str(request.id))
    request.key_id = key_id
    session.flush()
    _move_plain_texts(session, settings, request, actor, done)
    return done


def _plain_texts(request: ErasureRequest) -> list[tuple[NoteKind, str, str, str]]:
    """(kind, column, text, author) of the DPO texts the oldest requests kept in plain columns."""
    texts = []
    if request.identity_reference and clean_text(request.identity_reference):
        author = request.identity_verified_by or request.filed_by
        texts.append(
            (NoteKind.identity_reference, "identity_reference", request.identity_reference, author)
        )
    if request.decision_reason and clean_text(request.decision_reason):
        kind = {
            S.rejected: NoteKind.rejection_details,
            S.cancelled: NoteKind.cancellation_reason,
        }.get(S(request.status), NoteKind.approval_note)
        author = request.decided_by or request.filed_by
        texts.append((kind, "decision_reason", request.decision_reason, author))
    return texts


def _move_plain_texts(
    session: Session, settings: Settings, request: ErasureRequest, actor: str, done: Sealed
) -> None:
    """The audit event of the new key; the oldest plain texts become notes sealed under it,
    beside this event, which carries their keyed hashes (so the console shows them as matching
    the log)."""
    assert request.key_id is not None
    texts = _plain_texts(request)
    digests = {
        DIGEST_FIELD[kind]: keyed_digest(settings, request.key_id, "dpo-text", clean_text(text))
        for kind, _, text, _ in texts
    }
    done.moved = [column for _, column, _, _ in texts]
    event = append_event(
        session,
        actor=actor,
        action="request.keys_created",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details={
            "key_ids": [request.key_id],
            "filed_before_request_keys": True,
            "sealed": done.sealed + done.moved,
            "notes_resealed": done.notes,
            "rule_set_versions_resealed": done.rule_set_versions,
            **digests,
        },
    )
    for kind, _, text, author in texts:
        session.add(
            RequestNote(
                id=uuid.uuid4(),
                request_id=request.id,
                kind=kind,
                text_encrypted=seal_for(settings, request.key_id, clean_text(text).encode()),
                author=author,
                audit_seq=event.seq,
            )
        )
    request.identity_reference = None
    request.decision_reason = None
    session.flush()
