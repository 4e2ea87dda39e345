"""One verification of the audit log, used by every surface that says "verifies".

``verify_log`` checks the chain (every row hashes and links), every event's MAC, and the
consistency of the chain with **every** stored checkpoint (the row at each checkpoint's sequence
exists and has the signed hash; no two valid checkpoints disagree; no signature is invalid), and
reports any tamper a signer recorded. It names the first bad sequence and the kind of tampering.

Incremental: after a successful verification the anchor remembers the (sequence, hash) reached
and the checkpoints compared; the next incremental run re-checks that row's hash (any rewrite
that recomputes hashes changes it), compares the checkpoints stored since, and recomputes only
the rows after it, so its cost follows the new events. A row before that head changed without
recomputing the hashes after it is found only by a full run (docs/THREAT_MODEL.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.audit.anchor import Anchor, Checkpoint
from service.audit.chain import GENESIS_HASH, KINDS, Problem, Walk, walk_from
from service.audit.keys import Keyring
from service.db.tables import AuditEvent


@dataclass(frozen=True)
class AuditVerdict:
    ok: bool
    mode: str
    events_checked: int
    last_seq: int | None
    last_hash: str
    verified_from_seq: int = 0
    checkpoints_checked: int = 0
    problems: tuple[Problem, ...] = field(default=())

    @property
    def first(self) -> Problem | None:
        # The earliest event; at one event, the row's own fault before what it breaks later.
        order = list(KINDS)
        return min(self.problems, key=lambda p: (p.seq, order.index(p.kind)), default=None)

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        return {
            "ok": self.ok,
            "mode": self.mode,
            "events_checked": self.events_checked,
            "verified_from_seq": self.verified_from_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "checkpoints_checked": self.checkpoints_checked,
            "first_broken_seq": first.seq if first else None,
            "kind": first.kind if first else None,
            "problem": first.words if first else None,
            "problems": [p.as_dict() for p in sorted(self.problems, key=lambda p: p.seq)[:20]],
        }


def _walk(
    session: Session, anchor: Anchor | None, incremental: bool, keyring: Keyring | None
) -> tuple[Walk, int, list[Problem]]:
    """The rows' walk: from the last verified head when incremental and that head still holds."""
    start = anchor.verified if (incremental and anchor is not None) else None
    if start is not None:
        stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == start[0]))
        if stored == start[1]:
            return walk_from(session, start[0], start[1], keyring), start[0], []
        kind = "truncated" if stored is None else "checkpoint_mismatch"
        # What this process verified earlier is gone or changed: say so, and check everything.
        return walk_from(session, keyring=keyring), 0, [Problem(start[0], kind)]
    return walk_from(session, 0, GENESIS_HASH, keyring), 0, []


def checkpoint_problems(
    session: Session,
    checkpoints: list[Checkpoint],
    valid: Callable[[Checkpoint], bool],
) -> list[Problem]:
    """The chain against every checkpoint: signature, agreement, presence, hash."""
    problems: list[Problem] = []
    by_seq: dict[int, set[str]] = defaultdict(set)
    for checkpoint in checkpoints:
        if valid(checkpoint):
            by_seq[checkpoint.seq].add(checkpoint.head_hash)
        else:
            problems.append(Problem(checkpoint.seq, "checkpoint_invalid"))
    problems += [Problem(seq, "checkpoint_conflict") for seq, h in by_seq.items() if len(h) > 1]
    if not by_seq:
        return problems
    # The database returns only the checkpoints its rows disagree with (one round trip).
    pairs = [(seq, h) for seq, hashes in by_seq.items() for h in hashes]
    disagreeing = session.execute(
        text(
            "SELECT c.seq, e.hash IS NULL AS missing FROM unnest(CAST(:seqs AS bigint[]), "
            "CAST(:hashes AS text[])) AS c(seq, hash) LEFT JOIN audit_events e ON e.seq = c.seq "
            "WHERE e.hash IS DISTINCT FROM c.hash"
        ),
        {"seqs": [p[0] for p in pairs], "hashes": [p[1] for p in pairs]},
    ).all()
    for seq, missing in sorted(set(disagreeing)):
        problems.append(Problem(int(seq), "truncated" if missing else "checkpoint_mismatch"))
    return problems


def verify_log(
    session: Session,
    anchor: Anchor | None,
    *,
    incremental: bool = False,
    keyring: Keyring | None = None,
    kept: tuple[Checkpoint, Ed25519PublicKey] | None = None,
) -> AuditVerdict:
    """Chain + MACs + every stored checkpoint + recorded tampers (+ a checkpoint an auditor
    kept, with the public key they kept); one answer."""
    walk, start, problems = _walk(session, anchor, incremental and kept is None, keyring)
    if walk.problem is not None:
        problems.append(walk.problem)
    checked = 0
    if kept is not None:
        kept_key = kept[1]
        problems += checkpoint_problems(session, [kept[0]], lambda c: c.signature_valid(kept_key))
        checked += 1
    if anchor is not None:
        # A full run lists the store anew; an incremental one at most every 2 s, and compares
        # only checkpoints no earlier verification of this process compared (the older ones
        # are pinned by the verified head, whose hash ``_walk`` re-checked).
        stored = anchor.stored(refresh=not start)
        checkpoints = [c for c in stored if not start or not anchor.compared(c)]
        checked += len(stored)
        problems += checkpoint_problems(session, checkpoints, anchor.signature_valid)
        problems += [Problem(0, "checkpoint_invalid") for _ in anchor.unreadable()]
        problems += [Problem(p.seq, "tamper_recorded") for p in anchor.tamper_records()]
    verdict = AuditVerdict(
        ok=not problems,
        mode="incremental" if start else "full",
        events_checked=walk.checked,
        last_seq=walk.last_seq,
        last_hash=walk.last_hash,
        verified_from_seq=start,
        checkpoints_checked=checked,
        problems=tuple(problems),
    )
    if anchor is not None and verdict.ok and walk.last_seq is not None:
        anchor.verified = (walk.last_seq, walk.last_hash)
        anchor.mark_compared(checkpoints)
    return verdict


def export_block(session: Session, anchor: Anchor, verdict: AuditVerdict) -> dict[str, Any]:
    """What every export embeds: a fresh signed checkpoint of the head the export verified,
    signed only when the whole verification passed and the head extends the last signed one."""
    checkpoint = None
    if verdict.ok and verdict.last_seq is not None:
        checkpoint = anchor.sign_head(session, verdict.last_seq, verdict.last_hash)
    return {
        **anchor.public_info(),
        "checkpoint": checkpoint.as_dict() if checkpoint else None,
    }
