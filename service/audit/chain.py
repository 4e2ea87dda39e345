"""The append-only, hash-chained audit log.

Every event is written in the same transaction as the state change it records. Appends are
serialised by a transaction-scoped advisory lock so the chain never forks; the lock is held only
until that (short) transaction commits.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.tables import AuditEvent

GENESIS_HASH = "0" * 64
# Arbitrary constant naming "the audit chain" among advisory locks.
_AUDIT_LOCK_KEY = 0x1E7E_A0D1
# session.info key: the (seq, hash) this session appended last; the anchor signs it after commit.
HEAD_INFO_KEY = "lethe_audit_head"
# (transaction, seq, hash) of the last event this session appended, while that transaction lasts.
_OWN_HEAD_KEY = "lethe_audit_own_head"


def canonical(
    *,
    seq: int,
    occurred_at: datetime,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    request_id: uuid.UUID | None,
    details: dict[str, Any],
) -> bytes:
    row = {
        "seq": seq,
        # Microseconds, UTC: exactly what timestamptz round-trips.
        "occurred_at": occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "request_id": str(request_id) if request_id else None,
        "details": details,
    }
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, canonical_row: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_row).hexdigest()


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    # Round-trip once so the hashed form is exactly what JSONB will give back.
    loaded: dict[str, Any] = json.loads(json.dumps(details, default=str))
    return loaded


def lock_audit_chain(session: Session) -> None:
    """Take the chain's lock for the rest of the transaction (re-entrant within it).

    Transactions that append events must take it before any row lock, so every writer acquires
    locks in the same order: otherwise one holding a row and waiting here, and another holding
    this lock and waiting for that row, deadlock.
    """
    session.execute(select(func.pg_advisory_xact_lock(_AUDIT_LOCK_KEY)))


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
    request_id: uuid.UUID | None = None,
) -> AuditEvent:
    """Append one event; flushes, never commits (the caller owns the transaction)."""
    seq, prev_hash = _head(session)
    occurred_at = utcnow()
    clean = _jsonable(details or {})
    row = canonical(
        seq=seq,
        occurred_at=occurred_at,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        request_id=request_id,
        details=clean,
    )
    event = AuditEvent(
        seq=seq,
        occurred_at=occurred_at,
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        request_id=request_id,
        details=clean,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, row),
    )
    session.add(event)
    session.flush()
    session.info[HEAD_INFO_KEY] = (event.seq, event.hash)
    session.info[_OWN_HEAD_KEY] = (session.get_transaction(), event.seq, event.hash)
    return event


def _head(session: Session) -> tuple[int, str]:
    """The next sequence number and the hash to chain to.

    The first append of a transaction takes the chain's lock and reads the head; later ones in
    the same transaction (the lock still held, so nobody else appended) reuse the head the last
    one left, which saves two round trips per event when one transaction closes many requests.
    """
    own = session.info.get(_OWN_HEAD_KEY)
    if own is not None and own[0] is session.get_transaction() and own[0] is not None:
        return own[1] + 1, own[2]
    lock_audit_chain(session)
    last = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    return (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    events_checked: int
    last_seq: int | None
    last_hash: str
    first_broken_seq: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "first_broken_seq": self.first_broken_seq,
            "problem": self.problem,
        }


def verify_events(events: Iterable[AuditEvent]) -> ChainVerification:
    """Recompute the chain in seq order and name the first row that does not fit."""
    prev_hash, expected_seq, checked = GENESIS_HASH, 1, 0
    last_seq: int | None = None
    for event in events:
        problem = None
        if event.seq != expected_seq:
            problem = f"sequence gap: expected {expected_seq}, found {event.seq}"
        elif event.prev_hash != prev_hash:
            problem = "prev_hash does not match the previous row's hash"
        else:
            row = canonical(
                seq=event.seq,
                occurred_at=event.occurred_at,
                actor=event.actor,
                action=event.action,
                target_type=event.target_type,
                target_id=event.target_id,
                request_id=event.request_id,
                details=event.details,
            )
            if chain_hash(prev_hash, row) != event.hash:
                problem = "row content does not match its hash"
        if problem:
            return ChainVerification(False, checked, last_seq, prev_hash, event.seq, problem)
        prev_hash, expected_seq, last_seq = event.hash, event.seq + 1, event.seq
        checked += 1
    return ChainVerification(True, checked, last_seq, prev_hash)


def verify_chain(session: Session) -> ChainVerification:
    events = session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=1000)
    )
    try:
        return verify_events(events)
    finally:
        # A broken chain stops early: close the streaming cursor instead of leaving it open
        # for the rest of the transaction.
        events.close()
