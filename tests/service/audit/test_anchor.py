"""Signed checkpoints catch what the hash chain alone cannot: a superuser's rewrite with every
later hash recomputed, a truncated tail, and a deleted middle row with the rest re-sequenced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from service.audit import append_event, verify_chain
from service.audit.anchor import (
    Anchor,
    Checkpoint,
    anchored,
    load_public_key,
    read_checkpoint,
)
from service.audit.chain import canonical, chain_hash
from service.audit.store import FolderStore
from service.audit.verify import AuditVerdict, verify_log
from tests.support.api import auth


@pytest.fixture
def anchor(tmp_path: Path) -> Anchor:
    return Anchor(Ed25519PrivateKey.generate(), FolderStore(tmp_path / "checkpoints"))


def _commit_events(factory: sessionmaker[Session], anchor: Anchor, n: int) -> None:
    with anchored(factory, anchor)() as s:
        for i in range(n):
            append_event(
                s,
                actor="test",
                action="test.event",
                target_type="test",
                target_id=str(i),
                details={"i": i},
            )
        s.commit()


def _auditor_keeps(anchor: Anchor, tmp_path: Path) -> tuple[Path, Path]:
    """What an auditor saves: the newest checkpoint and the public key, outside lethe."""
    latest = anchor.latest()
    assert latest is not None
    saved = tmp_path / "kept-checkpoint.json"
    saved.write_text(json.dumps(latest.as_dict()))
    key = tmp_path / "lethe-audit.pub"
    key.write_text(anchor.public_key_pem())
    return saved, key


def _superuser(session: Session, sql: str, params: dict[str, Any] | None = None) -> None:
    session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
    session.execute(text(sql), params or {})
    session.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


def _rehash_everything(session: Session) -> None:
    """Recompute prev_hash and hash of every row, as an attacker covering their tracks would."""
    rows = session.execute(
        text(
            "SELECT seq, occurred_at, actor, action, target_type, target_id, request_id, details"
            " FROM audit_events ORDER BY seq"
        )
    ).all()
    prev = "0" * 64
    for row in rows:
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
        new = chain_hash(prev, body)
        _superuser(
            session,
            "UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s",
            {"p": prev, "h": new, "s": row.seq},
        )
        prev = new
    session.expire_all()


def _check(session: Session, saved: Path, key: Path) -> AuditVerdict:
    """What the auditor runs: the log against the checkpoint and key they kept (no store)."""
    session.expire_all()
    kept = (read_checkpoint(str(saved)), load_public_key(key.read_bytes()))
    return verify_log(session, None, kept=kept)


def test_commits_write_a_checkpoint_of_the_head_and_it_verifies(
    session: Session, factory: sessionmaker[Session], anchor: Anchor, tmp_path: Path
) -> None:
    _commit_events(factory, anchor, 3)
    head = verify_chain(session)
    latest = anchor.latest()
    assert latest is not None and latest.seq == head.last_seq
    assert latest.head_hash == head.last_hash
    assert latest.signature_valid(anchor.public_key)
    saved, key = _auditor_keeps(anchor, tmp_path)
    # Later events do not disturb an earlier checkpoint.
    _commit_events(factory, anchor, 2)
    result = _check(session, saved, key)
    assert result.ok and result.last_seq == latest.seq + 2


def test_a_rolled_back_transaction_writes_no_checkpoint(
    factory: sessionmaker[Session], anchor: Anchor
) -> None:
    with anchored(factory, anchor)() as s:
        append_event(s, actor="t", action="test.event", target_type="t", target_id="x")
        s.rollback()
    assert anchor.latest() is None


def test_rewrite_with_every_later_hash_recomputed_is_detected(
    session: Session, factory: sessionmaker[Session], anchor: Anchor, tmp_path: Path
) -> None:
    _commit_events(factory, anchor, 5)
    saved, key = _auditor_keeps(anchor, tmp_path)
    target = read_checkpoint(str(saved)).seq - 3
    _superuser(
        session, "UPDATE audit_events SET details = '{\"i\": 99}' WHERE seq = :s", {"s": target}
    )
    _rehash_everything(session)
    # The recomputed hashes no longer match their MACs: the rewriter holds no event key.
    assert verify_chain(session).kind == "not_authenticated"
    result = _check(session, saved, key)
    assert not result.ok and result.first is not None
    assert {p.kind for p in result.problems} >= {"not_authenticated", "checkpoint_mismatch"}


def test_truncated_tail_is_detected(
    session: Session, factory: sessionmaker[Session], anchor: Anchor, tmp_path: Path
) -> None:
    _commit_events(factory, anchor, 5)
    saved, key = _auditor_keeps(anchor, tmp_path)
    last = read_checkpoint(str(saved)).seq
    _superuser(session, "DELETE FROM audit_events WHERE seq > :s", {"s": last - 2})
    assert verify_chain(session).ok
    result = _check(session, saved, key)
    assert not result.ok and result.first is not None
    assert result.first.kind == "truncated" and result.first.seq == last


def test_deleted_middle_row_is_detected_even_when_resequenced_and_rehashed(
    session: Session, factory: sessionmaker[Session], anchor: Anchor, tmp_path: Path
) -> None:
    _commit_events(factory, anchor, 5)
    saved, key = _auditor_keeps(anchor, tmp_path)
    middle = read_checkpoint(str(saved)).seq - 2
    _superuser(session, "DELETE FROM audit_events WHERE seq = :s", {"s": middle})
    session.expire_all()
    assert not verify_chain(session).ok  # a plain deletion breaks the chain
    # Cover it up: close the gap and recompute every hash.
    later = session.execute(
        text("SELECT seq FROM audit_events WHERE seq > :s ORDER BY seq"), {"s": middle}
    ).scalars()
    for seq in list(later):
        _superuser(
            session, "UPDATE audit_events SET seq = :n WHERE seq = :o", {"n": seq - 1, "o": seq}
        )
    _rehash_everything(session)
    assert verify_chain(session).kind == "not_authenticated"
    result = _check(session, saved, key)
    assert not result.ok and result.first is not None


def test_a_checkpoint_signed_by_another_key_is_refused(
    session: Session, factory: sessionmaker[Session], anchor: Anchor, tmp_path: Path
) -> None:
    _commit_events(factory, anchor, 2)
    forger = Anchor(Ed25519PrivateKey.generate(), FolderStore(tmp_path / "forged"))
    forged = forger.sign(1, "f" * 64)
    result = verify_log(session, None, kept=(forged, anchor.public_key))
    assert not result.ok and result.first is not None
    assert result.first.kind == "checkpoint_invalid"
    tampered = Checkpoint(**{**anchor.sign(1, "a" * 64).as_dict(), "head_hash": "b" * 64})
    assert not tampered.signature_valid(anchor.public_key)


def test_exports_embed_a_checkpoint_the_public_key_verifies(
    app_client: TestClient, tokens: dict[str, str], anchor: Anchor
) -> None:
    # A store of its own: other tests' exports checkpointed heads that were later rolled back.
    app_client.app.state.anchor = anchor  # type: ignore[attr-defined]
    key = app_client.get("/v1/audit/public-key")
    assert key.status_code == 200 and key.json()["algorithm"] == "Ed25519"
    public = load_public_key(key.json()["public_key"])
    report = app_client.get("/v1/audit/export", headers=auth(tokens["auditor"]))
    assert report.status_code == 200
    block = report.json()["anchor"]
    checkpoint = Checkpoint.from_dict(block["checkpoint"])
    assert checkpoint.signature_valid(public)
    assert checkpoint.seq == report.json()["chain"]["last_seq"]
    csv = app_client.get(
        "/v1/audit/export", params={"format": "csv"}, headers=auth(tokens["auditor"])
    )
    from_header = Checkpoint.from_dict(json.loads(csv.headers["x-audit-checkpoint"]))
    assert from_header.signature_valid(public)
    # The export stored what it signed, and the next export checks the chain against it.
    again = app_client.get("/v1/audit/export", headers=auth(tokens["auditor"])).json()
    assert again["chain"]["ok"] is True and again["chain"]["checkpoints_checked"] >= 1
