"""Crypto-shredding: a request's data key is destroyed once its retention ends.

Everything lethe stores about a request's person (the identifier and facts to forget, the
rules built from them, the reason, the DPO's notes and the references of identity checks) is
sealed under the request's data key (``service.core.keys``). When the request ends — completed
or failed and its rules no longer served, rejected or cancelled — and the retention of that
kind (settings) has passed, the periodic job destroys the key: every copy of the sealed bytes
in tables, page free space, WAL, replicas and backups becomes unreadable at that moment. The
sealed columns are cleared as well, and an audit event records which key was destroyed, when,
and what was cleared. These functions flush; the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.keys import keys_for
from service.db.base import utcnow
from service.db.enums import RequestStatus as S
from service.db.enums import RuleSetStatus
from service.db.tables import ErasureRequest, RuleSetVersion

# At most this many requests per run: one run stays short; the next run takes the rest.
BATCH = 200

# Deleted from the request's row with the key (their ciphertext); what stays is ciphertext
# whose key is gone.
CLEARED = ["forget_content", "reason"]
UNREADABLE = ["rule_sets", "notes", "identity_references", "audit_digests"]


@dataclass(frozen=True)
class RetentionPolicy:
    completed_days: float
    rejected_days: float
    cancelled_days: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            settings.retention_completed_days,
            settings.retention_rejected_days,
            settings.retention_cancelled_days,
        )


def _days(days: float) -> str:
    if days == 0:
        return "as soon as it ends"
    if days < 1:
        return f"{round(days * 24, 1):g} hours after it ends"
    return f"{days:g} day{'s' if days != 1 else ''} after it ends"


def policy_words(settings: Settings) -> list[str]:
    """The retention policy in the DPO's words (the console shows it)."""
    if not settings.crypto_shredding:
        return [
            "Key destruction is switched off in this deployment: the personal data of ended "
            "requests is kept, encrypted, until an administrator removes it."
        ]
    p = RetentionPolicy.from_settings(settings)
    return [
        f"Completed requests: the requester's data is destroyed {_days(p.completed_days)}, "
        "once no guard rule of the request is still in force (guard rules that replace a "
        "retrain stay while the model is served).",
        f"Rejected or failed requests: destroyed {_days(p.rejected_days)}.",
        f"Cancelled requests: destroyed {_days(p.cancelled_days)}.",
        "Destroying means the request's own encryption key is deleted: every stored copy of "
        "the identifier, names, facts, reasons and notes, including database backups, can no "
        "longer be read. The audit log keeps only what happened, never the data itself.",
    ]


def _due(settings: Settings, now: datetime) -> ColumnElement[bool]:
    p = RetentionPolicy.from_settings(settings)
    ended_by = {
        S.completed: (ErasureRequest.completed_at, p.completed_days),
        S.failed: (ErasureRequest.completed_at, p.rejected_days),
        S.rejected: (ErasureRequest.decided_at, p.rejected_days),
        S.cancelled: (ErasureRequest.decided_at, p.cancelled_days),
    }
    return or_(
        *(
            and_(ErasureRequest.status == status, column <= now - timedelta(days=days))
            for status, (column, days) in ended_by.items()
        )
    )


def _served_request_ids(session: Session) -> set[str]:
    """Requests whose rules are in an active rule set: their key is still needed to serve."""
    rows = session.scalars(
        select(RuleSetVersion.request_ids).where(RuleSetVersion.status == RuleSetStatus.active)
    )
    return {str(rid) for ids in rows for rid in ids or []}


def due_requests(session: Session, settings: Settings, now: datetime) -> list[ErasureRequest]:
    """Ended requests past their retention whose keys still exist (locked, skipping rows
    another run holds)."""
    stmt = (
        select(ErasureRequest)
        .where(
            ErasureRequest.key_id.is_not(None),
            ErasureRequest.keys_destroyed_at.is_(None),
            _due(settings, now),
        )
        .order_by(ErasureRequest.completed_at, ErasureRequest.decided_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    )
    served = _served_request_ids(session)
    return [r for r in session.scalars(stmt) if str(r.id) not in served]


def shred_request(
    session: Session, settings: Settings, request: ErasureRequest, actor: str, now: datetime
) -> None:
    """Destroy the request's data key (outside the database first), then clear its sealed
    columns and record the destruction."""
    assert request.key_id is not None
    existed = keys_for(settings).destroy(request.key_id)
    request.keys_destroyed_at = now
    request.forget_content = None
    request.reason_encrypted = None
    session.flush()
    append_event(
        session,
        actor=actor,
        action="request.keys_destroyed",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details={
            "key_ids": [request.key_id],
            "destroyed_at": now.isoformat(),
            # False: the key was already gone (a run that died before recording it).
            "key_found": existed,
            "status": str(request.status),
            "cleared": CLEARED,
            "unreadable": UNREADABLE,
        },
    )


def _retention_days(settings: Settings, request: ErasureRequest) -> float | None:
    p = RetentionPolicy.from_settings(settings)
    return {
        S.completed: p.completed_days,
        S.failed: p.rejected_days,
        S.rejected: p.rejected_days,
        S.cancelled: p.cancelled_days,
    }.get(S(request.status))


def shred_at_end(session: Session, settings: Settings, request: ErasureRequest, actor: str) -> bool:
    """Called as a request ends (in its transaction): with a retention of 0 for its kind and
    no rule of it still served, its key is destroyed at once rather than at the job's next
    run. Whether it was."""
    if (
        not settings.crypto_shredding
        or request.key_id is None
        or request.keys_destroyed_at is not None
        or _retention_days(settings, request) != 0
        or str(request.id) in _served_request_ids(session)
    ):
        return False
    shred_request(session, settings, request, actor, utcnow())
    return True


def shred_due(session: Session, settings: Settings, actor: str, now: datetime) -> int:
    """Shred every request that is due; the number shredded."""
    if not settings.crypto_shredding:
        return 0
    due = due_requests(session, settings, now)
    for request in due:
        shred_request(session, settings, request, actor, now)
    return len(due)
