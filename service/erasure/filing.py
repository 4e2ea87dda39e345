"""Filing an erasure request, and reading one back. Services flush; the caller commits."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.errors import conflict, invalid, not_found
from service.core.keys import keys_for, request_key_id
from service.core.security import keyed_digest, seal_for, subject_ref
from service.db.base import utcnow
from service.db.enums import ModelKind, RequestStatus
from service.db.tables import AuditEvent, DataSubject, ErasureRequest, MlModel
from service.erasure.forget_content import forget_payload, seal
from service.erasure.identifiers import check_identifier
from service.erasure.lifecycle import approve_request


@dataclass(frozen=True)
class NewRequest:
    subject_identifier: str
    reason: str
    scope: list[str] | None
    forget: dict[str, Any] | None
    idempotency_key: str | None
    # GDPR Art. 17(1) point, "a".."f"; and whether approval waits for identity verification.
    legal_ground: str | None = None
    identity_required: bool = False


def ensure_subject(session: Session, ref: str) -> None:
    session.execute(insert(DataSubject).values(subject_ref=ref).on_conflict_do_nothing())


def _payload(ref: str, new: NewRequest) -> str:
    body = {"subject": ref, "scope": new.scope, "reason": new.reason, "forget": new.forget}
    if new.legal_ground is not None:
        body["legal_ground"] = new.legal_ground
    return json.dumps(body, sort_keys=True)


def _payload_hash(settings: Settings, ref: str, new: NewRequest) -> str:
    """A keyed hash of what was filed (it holds names and facts: never a plain SHA-256 that a
    guess could be tested against); it outlives the request's key, for idempotent retries."""
    return keyed_digest(settings, None, "request-payload", _payload(ref, new))


def legacy_payload_hash(settings: Settings, plain_sha256: str) -> str:
    """What replaces the plain SHA-256 of the payload of a request filed before per-request
    keys (``service.erasure.seal_existing``): a keyed hash of it, so that no guess at the
    reason or the facts can be tested against it, while a retry still matches."""
    return keyed_digest(settings, None, "legacy-request-payload", plain_sha256)


def file_request(
    session: Session, settings: Settings, new: NewRequest, actor: str
) -> tuple[ErasureRequest, bool]:
    """Returns (request, created). The same idempotency key returns the same request. An
    identifier no record could carry (a NUL byte, empty once normalised) is refused: 422."""
    check_identifier(new.subject_identifier)
    if "\x00" in new.reason:
        # Sealed bytes could hold it, but the reason is text shown back: the same 422 a text
        # column gave before it was sealed.
        raise invalid("invalid_value", "a value cannot be stored")
    ref = subject_ref(settings, new.subject_identifier)
    payload_hash = _payload_hash(settings, ref, new)
    legacy = legacy_payload_hash(settings, hashlib.sha256(_payload(ref, new).encode()).hexdigest())
    existing = _same_key(session, new.idempotency_key, {payload_hash, legacy})
    if existing is not None:
        return existing, False
    kinds = _kinds_in_scope(session, new.scope)
    # The raw identifier is kept (encrypted) only where a generative model needs it for rules.
    keeps_content = new.forget is not None or ModelKind.generative in kinds.values()
    ensure_subject(session, ref)
    now = utcnow()
    request_id = uuid.uuid4()
    # The request's own data key, outside the database: destroying it shreds every copy.
    key_id = request_key_id(request_id)
    keys_for(settings).create(key_id)
    request = ErasureRequest(
        id=request_id,
        subject_ref=ref,
        scope=new.scope,
        reason=None,
        reason_encrypted=seal_for(settings, key_id, new.reason.encode()),
        key_id=key_id,
        forget_content=(
            seal(settings, key_id, forget_payload(new.subject_identifier, new.forget))
            if keeps_content
            else None
        ),
        status=RequestStatus.received,
        idempotency_key=new.idempotency_key,
        payload_hash=payload_hash,
        legal_ground=new.legal_ground,
        identity_required=new.identity_required,
        filed_by=actor,
        received_at=now,
        due_at=now + timedelta(days=settings.deadline_days),
    )
    session.add(request)
    session.flush()
    _audit_received(session, request, new, keeps_content, actor)
    if settings.auto_approve:
        approve_request(session, settings, request, actor="system", reason="auto-approval policy")
    return request, True


def _same_key(
    session: Session, idempotency_key: str | None, payload_hashes: set[str]
) -> ErasureRequest | None:
    """The request filed before under this idempotency key (its payload hash is one of
    ``payload_hashes``: today's, or that of a request filed before per-request keys); a
    different request under the same key is a conflict."""
    if idempotency_key is None:
        return None
    existing = session.scalar(
        select(ErasureRequest).where(ErasureRequest.idempotency_key == idempotency_key)
    )
    if existing is not None and existing.payload_hash not in payload_hashes:
        raise conflict(
            "idempotency_key_reused",
            "this idempotency key was used for a different request",
        )
    return existing


def _kinds_in_scope(session: Session, scope: list[str] | None) -> dict[str, ModelKind]:
    """The kind of each model in scope (every model: no scope); unknown names are refused."""
    in_scope = select(MlModel.name, MlModel.kind)
    if scope is not None:
        in_scope = in_scope.where(MlModel.name.in_(scope))
    kinds = dict(session.execute(in_scope).tuples().all())
    if scope is not None:
        unknown = sorted(set(scope) - set(kinds))
        if unknown:
            raise invalid(
                "unknown_model", "scope names models that are not registered", models=unknown
            )
    return kinds


def _audit_received(
    session: Session, request: ErasureRequest, new: NewRequest, keeps_content: bool, actor: str
) -> None:
    append_event(
        session,
        actor=actor,
        action="request.received",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details={
            "subject_ref": request.subject_ref,
            "scope": new.scope or "all",
            "due_at": request.due_at.isoformat(),
            "forget_content_stored": keeps_content,
            "facts": len(new.forget["facts"]) if new.forget else 0,
            **({"legal_ground": new.legal_ground} if new.legal_ground else {}),
            **({"identity_required": True} if new.identity_required else {}),
        },
    )


def get_request(session: Session, request_id: uuid.UUID, *, lock: bool = False) -> ErasureRequest:
    stmt = select(ErasureRequest).where(ErasureRequest.id == request_id)
    if lock:
        stmt = stmt.with_for_update()
    request = session.scalar(stmt)
    if request is None:
        raise not_found("request_not_found", "no erasure request with this id")
    return request


def request_timeline(session: Session, request_id: uuid.UUID) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent).where(AuditEvent.request_id == request_id).order_by(AuditEvent.seq)
        )
    )
