"""The audit chain verifies, and any alteration, deletion or reordering is detected."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from service.audit import append_event, verify_chain


def _append(session: Session, n: int) -> None:
    for i in range(n):
        append_event(
            session,
            actor="test",
            action="test.event",
            target_type="test",
            target_id=str(i),
            details={"i": i, "nested": {"x": [1, 2.5, "a"]}},
        )


def _tamper(session: Session, sql: str) -> None:
    # The trigger refuses UPDATE/DELETE; an attacker with superuser rights could disable it.
    session.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
    session.execute(text(sql))
    session.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


def test_chain_verifies(session: Session) -> None:
    _append(session, 5)
    result = verify_chain(session)
    assert result.ok and result.events_checked >= 5 and result.first_broken_seq is None


def test_update_and_delete_are_refused_by_the_database(session: Session) -> None:
    _append(session, 2)
    for sql in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), session.begin_nested():
            session.execute(text(sql))


def _last_seqs(session: Session, n: int) -> list[int]:
    rows = session.execute(
        text("SELECT seq FROM audit_events ORDER BY seq DESC LIMIT :n"), {"n": n}
    )
    return sorted(r[0] for r in rows)


def test_altered_row_is_named(session: Session) -> None:
    _append(session, 4)
    seqs = _last_seqs(session, 4)
    _tamper(session, f"UPDATE audit_events SET details = '{{\"i\": 99}}' WHERE seq = {seqs[1]}")
    result = verify_chain(session)
    assert not result.ok and result.first_broken_seq == seqs[1]
    assert result.kind == "row_changed"


def test_deleted_row_is_detected(session: Session) -> None:
    _append(session, 4)
    seqs = _last_seqs(session, 4)
    _tamper(session, f"DELETE FROM audit_events WHERE seq = {seqs[2]}")
    result = verify_chain(session)
    # The missing sequence number is named.
    assert not result.ok and result.first_broken_seq == seqs[2]
    assert result.kind == "sequence_gap"


def test_reordered_rows_are_detected(session: Session) -> None:
    _append(session, 4)
    a, b = _last_seqs(session, 4)[1:3]
    # Swap the contents of two rows, keeping their sequence numbers.
    _tamper(session, f"UPDATE audit_events SET seq = -1 WHERE seq = {a}")
    _tamper(session, f"UPDATE audit_events SET seq = {a} WHERE seq = {b}")
    _tamper(session, f"UPDATE audit_events SET seq = {b} WHERE seq = -1")
    result = verify_chain(session)
    assert not result.ok and result.first_broken_seq == a


def test_timestamp_alteration_is_detected(session: Session) -> None:
    _append(session, 2)
    seq = _last_seqs(session, 1)[0]
    _tamper(
        session,
        f"UPDATE audit_events SET occurred_at = occurred_at - interval '1 day' WHERE seq = {seq}",
    )
    assert verify_chain(session).first_broken_seq == seq


def test_rows_without_a_mac_fail_unless_written_before_event_keys(session: Session) -> None:
    from service.audit.keys import Keyring, current_keyring

    _append(session, 3)
    first = _last_seqs(session, 3)[0]
    _tamper(session, f"UPDATE audit_events SET mac = NULL WHERE seq <= {first}")
    result = verify_chain(session)
    assert result.kind == "not_authenticated" and result.first_broken_seq is not None
    upgraded = Keyring(current_keyring().keys, legacy_through=first)
    assert verify_chain(session, upgraded).ok
