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

from service.audit.keys import Keyring, current_keyring
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
    event_hash = chain_hash(prev_hash, row)
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
        hash=event_hash,
        mac=current_keyring().mac(event_hash),
    )
    session.add(event)
    session.flush()
    session.info[HEAD_INFO_KEY] = (event.seq, event.hash)
    session.info[_OWN_HEAD_KEY] = (session.get_transaction(), event.seq, event.hash)
    return event


# Kinds of tampering, each with the plain words a report prints.
KINDS = {
    "sequence_gap": "an event is missing or out of order",
    "link_broken": "an event does not follow the one recorded before it",
    "row_changed": "an event's content differs from what was recorded",
    "not_authenticated": "an event was not written by lethe (its authentication code is missing "
    "or wrong)",
    "checkpoint_mismatch": "history was rewritten: an event differs from a signed checkpoint",
    "truncated": "events that a signed checkpoint covers are missing",
    "checkpoint_invalid": "a stored checkpoint's signature is not valid",
    "checkpoint_conflict": "two signed checkpoints disagree about the same event",
    "tamper_recorded": "the checkpoint signer found the log did not extend what it had signed",
}


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str

    @property
    def words(self) -> str:
        return KINDS[self.kind]

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "problem": self.words}


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
    kind: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "first_broken_seq": self.first_broken_seq,
            "problem": self.problem,
            "kind": self.kind,
        }


ROW_COLUMNS = (
    AuditEvent.seq,
    AuditEvent.occurred_at,
    AuditEvent.actor,
    AuditEvent.action,
    AuditEvent.target_type,
    AuditEvent.target_id,
    AuditEvent.request_id,
    AuditEvent.details,
    AuditEvent.prev_hash,
    AuditEvent.hash,
    AuditEvent.mac,
)


def row_problem(row: Any, prev_hash: str, expected_seq: int, keyring: Keyring) -> str | None:
    """The kind of tampering one row shows, given the row before it; None if it fits."""
    if row.seq != expected_seq:
        return "sequence_gap"
    if row.prev_hash != prev_hash:
        return "link_broken"
    body = canonical(
        seq=row.seq,
        occurred_at=row.occurred_at,
        actor=row.actor,
        action=row.action,
        target_type=row.target_type,
        target_id=row.target_id,
        request_id=row.request_id,
        details=row.details,
    )
    if chain_hash(prev_hash, body) != row.hash:
        return "row_changed"
    if row.mac is None and keyring.accepts_missing(row.seq):
        return None
    if not keyring.check(row.hash, row.mac):
        return "not_authenticated"
    return None


@dataclass(frozen=True)
class Walk:
    """Rows checked from a trusted (seq, hash) onwards, up to the first that does not fit."""

    checked: int
    last_seq: int | None
    last_hash: str
    problem: Problem | None


def walk_rows(
    rows: Iterable[Any], after_seq: int, after_hash: str, keyring: Keyring | None = None
) -> Walk:
    keys = keyring or current_keyring()
    prev_hash, expected, checked = after_hash, after_seq + 1, 0
    last_seq: int | None = after_seq or None
    for row in rows:
        kind = row_problem(row, prev_hash, expected, keys)
        if kind is not None:
            return Walk(checked, last_seq, prev_hash, Problem(min(row.seq, expected), kind))
        prev_hash, expected, last_seq = row.hash, row.seq + 1, row.seq
        checked += 1
    return Walk(checked, last_seq, prev_hash, None)


def walk_from(
    session: Session,
    after_seq: int = 0,
    after_hash: str = GENESIS_HASH,
    keyring: Keyring | None = None,
    until_seq: int | None = None,
) -> Walk:
    """Stream the rows after ``after_seq`` (up to ``until_seq``) through ``walk_rows``."""
    stmt = select(*ROW_COLUMNS).where(AuditEvent.seq > after_seq).order_by(AuditEvent.seq)
    if until_seq is not None:
        stmt = stmt.where(AuditEvent.seq <= until_seq)
    rows = session.execute(stmt.execution_options(yield_per=5000))
    try:
        return walk_rows(rows, after_seq, after_hash, keyring)
    finally:
        # A broken chain stops early: close the streaming cursor.
        rows.close()


def verify_chain(session: Session, keyring: Keyring | None = None) -> ChainVerification:
    """The chain and every event's MAC, from the first row (no checkpoints: see
    ``service.audit.verify.verify_log``, which every surface uses)."""
    walk = walk_from(session, keyring=keyring)
    if walk.problem is None:
        return ChainVerification(True, walk.checked, walk.last_seq, walk.last_hash)
    problem = walk.problem
    return ChainVerification(
        False,
        walk.checked,
        walk.last_seq,
        walk.last_hash,
        problem.seq,
        problem.words,
        problem.kind,
    )
