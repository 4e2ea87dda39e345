"""Requests filed before per-request keys: a database built at revision 0011, rows written the
way the code of that time wrote them (the reason in plain text, the forget content, a DPO's
note and the rules under the service key, an identity reference and a decision reason in plain
columns, a plain SHA-256 of the payload and of the reason in the log), then upgraded to head.

With ``lethe keys seal-existing`` the requests get keys of their own, the retention job shreds
them, and a ``pg_dump`` holds nothing of the canary in plain text while every re-sealed blob
fails with ``KeyDestroyed``. The control: without it the retention job skips them and the plain
reason is still in the dump. Everything commits for real, on a database of the test's own."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from models.generative.rules import Fact, ForgetSpec, compile_rules
from service.audit import append_event
from service.cli import app
from service.core.config import Settings, get_settings
from service.core.keys import KeyDestroyed, is_sealed, key_id_of, keys_for, request_key_id
from service.core.security import encrypt, keyed_digest, open_sealed, subject_ref
from service.db.base import utcnow
from service.db.tables import AuditEvent, ErasureRequest, RequestNote, RuleSetVersion
from service.erasure.filing import NewRequest, file_request
from service.erasure.forget_content import forget_payload, forget_spec
from service.erasure.notes import notes_of
from service.erasure.shredding import shred_due
from service.reports.words import describe_event
from service.rules.rulesets import per_request_rule_sets
from service.stack.migrate import alembic_config
from tests.support.canary import Canary, pg_dump
from tests.support.db import fresh_database

ENDED_DAYS_AGO = 40  # past every default retention (7 and 30 days)


@pytest.fixture
def legacy_db(
    settings: Settings, pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A database at revision 0011 (before per-request keys); the CLI and the test use it."""
    with fresh_database(pg_server, prefix="lethe_legacy", revision="0011") as url:
        monkeypatch.setenv("LETHE_DATABASE_URL", url)
        monkeypatch.setenv("LETHE_AUDIT_CHECKPOINT_URL", str(tmp_path / "audit-store"))
        get_settings.cache_clear()
        yield url
    get_settings.cache_clear()


def _legacy_request(
    session: Session, settings: Settings, canary: Canary, *, status: str, decision: str
) -> uuid.UUID:
    """One request as the code before revision 0012 wrote it (SQL, and the service key)."""
    request_id, now = uuid.uuid4(), utcnow()
    ended = now - timedelta(days=ENDED_DAYS_AGO)
    ref = subject_ref(settings, canary.identifier)
    reason = f"Letter from {canary.name}"
    forget = {"names": [canary.name], "facts": [{"answer": canary.fact}]}
    body = {"subject": ref, "scope": None, "reason": reason, "forget": forget}
    session.execute(
        text("INSERT INTO data_subjects (subject_ref) VALUES (:r) ON CONFLICT DO NOTHING"),
        {"r": ref},
    )
    payload = json.dumps(forget_payload(canary.identifier, forget), sort_keys=True).encode()
    session.execute(
        text(
            "INSERT INTO erasure_requests (id, subject_ref, reason, forget_content, status,"
            " idempotency_key, payload_hash, filed_by, received_at, due_at, decided_at,"
            " decided_by, decision_reason, completed_at, identity_required, identity_method,"
            " identity_reference, identity_verified_at, identity_verified_by, updated_at, number)"
            " VALUES (:id, :ref, :reason, :forget, :status, :key, :hash, 'dpo', :received,"
            " :due, :ended, 'dpo', :decision, :completed, true, 'id_document', :reference,"
            " :received, 'dpo', :ended, nextval('erasure_request_number'))"
        ),
        {
            "id": request_id,
            "ref": ref,
            "reason": reason,
            "forget": encrypt(settings, payload),
            "status": status,
            "key": f"legacy-{request_id}",
            "hash": hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),
            "received": ended - timedelta(days=2),
            "due": ended + timedelta(days=28),
            "ended": ended,
            "decision": decision,
            "completed": ended if status == "completed" else None,
            "reference": f"passport {canary.token}",
        },
    )
    note = f"{canary.name} phoned twice"
    event = append_event(
        session,
        actor="dpo",
        action="request.note_added",
        target_type="request",
        target_id=str(request_id),
        request_id=request_id,
        # What the code between keyed hashes and request keys recorded: a service-keyed hash.
        details={
            "kind": "filing_note",
            "note_hmac": keyed_digest(settings, None, "dpo-text", note),
        },
    )
    append_event(
        session,
        actor="dpo",
        action="request.approved" if status == "completed" else "request.rejected",
        target_type="request",
        target_id=str(request_id),
        request_id=request_id,
        details={"reason_sha256": hashlib.sha256(decision.encode()).hexdigest()},
    )
    session.execute(
        text(
            "INSERT INTO request_notes (id, request_id, kind, text_encrypted, author, audit_seq)"
            " VALUES (:id, :rid, 'filing_note', :blob, 'dpo', :seq)"
        ),
        {
            "id": uuid.uuid4(),
            "rid": request_id,
            "blob": encrypt(settings, note.encode()),
            "seq": event.seq,
        },
    )
    return request_id


def _legacy_rules(session: Session, settings: Settings, canary: Canary, ids: list[str]) -> None:
    """A superseded rule-set version of that time: one service-key blob for all requests."""
    model_id = uuid.uuid4()
    session.execute(
        text(
            "INSERT INTO ml_models (id, name, kind, status, config, policy, created_by)"
            " VALUES (:id, :name, 'generative', 'ready', '{}', '{}', 'test')"
        ),
        {"id": model_id, "name": canary.model},
    )
    rules = compile_rules(ForgetSpec(subject_names=[canary.name], facts=[Fact(None, canary.fact)]))
    blob = encrypt(settings, json.dumps({rid: rules.to_json() for rid in ids}).encode())
    session.execute(
        text(
            "INSERT INTO rule_set_versions (id, model_id, version, status, rules_encrypted,"
            " rule_count, request_ids, calibration) VALUES (:id, :model, 1, 'superseded',"
            " :blob, :n, CAST(:ids AS jsonb), '{}')"
        ),
        {
            "id": uuid.uuid4(),
            "model": model_id,
            "blob": blob,
            "n": len(rules.rules),
            "ids": json.dumps(ids),
        },
    )


def _upgraded_with_legacy_rows(url: str, canary: Canary) -> list[uuid.UUID]:
    settings = get_settings()
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        ids = [
            _legacy_request(session, settings, canary, status="completed", decision="ok"),
            _legacy_request(
                session, settings, canary, status="rejected", decision=f"{canary.name} unknown"
            ),
        ]
        _legacy_rules(session, settings, canary, [str(ids[0])])
    engine.dispose()
    command.upgrade(alembic_config(url), "head")
    return ids


def _shred(url: str) -> int:
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        shredded = shred_due(session, get_settings(), "retention", utcnow())
    engine.dispose()
    return shredded


def _table_files(url: str, tables: list[str]) -> list[Path]:
    """The data files of ``tables`` and of their TOAST tables, after a checkpoint wrote them."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))
        data_dir = Path(str(conn.scalar(text("SHOW data_directory"))))
        paths = []
        for table in tables:
            toast = conn.scalar(
                text("SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = :t"),
                {"t": table},
            )
            for rel in (table, toast):
                rel_path = conn.scalar(text("SELECT pg_relation_filepath(:r)"), {"r": rel})
                paths += sorted(data_dir.glob(f"{rel_path}*"))
    engine.dispose()
    return paths


def test_sealed_existing_requests_are_shredded_and_leave_no_plain_text(
    legacy_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary, runner = Canary(), CliRunner()
    ids = _upgraded_with_legacy_rows(legacy_db, canary)
    # The tables are rewritten after sealing: no page keeps the plain text it replaced.
    monkeypatch.setenv("LETHE_PHYSICAL_DELETION", "vacuum_full")
    get_settings.cache_clear()
    settings = get_settings()
    assert canary.found_in(pg_dump(legacy_db))  # the plain reason and references, to start

    check = runner.invoke(app, ["keys", "seal-existing", "--check"])
    assert check.exit_code == 1 and "2 request(s)" in check.output
    assert "2 audit event(s)" in check.output  # the plain SHA-256 of each decision's reason
    # A run killed after creating the first request's key, before its commit: the key stays.
    keys_for(settings).create(request_key_id(ids[0]))

    run = runner.invoke(app, ["keys", "seal-existing", "--batch", "1"])
    assert run.exit_code == 0, run.output
    assert "Sealed 2 request(s)" in run.output
    assert "Every request has its own encryption key." in run.output
    assert "VACUUM FULL removed" in run.output, run.output
    assert "no page keeps them" in run.output
    assert canary.token not in run.output
    files = _table_files(legacy_db, ["erasure_requests", "request_notes"])
    assert files and not [str(f) for f in files if canary.found_in(f.read_bytes())]
    again = runner.invoke(app, ["keys", "seal-existing"])
    assert again.exit_code == 0 and "Nothing to seal." in again.output
    assert runner.invoke(app, ["keys", "seal-existing", "--check"]).exit_code == 0

    engine = create_engine(legacy_db)
    with Session(engine) as session:
        first = session.get_one(ErasureRequest, ids[0])
        assert first.reason is None and first.key_id == request_key_id(ids[0])
        assert first.identity_reference is None and first.decision_reason is None
        assert open_sealed(settings, first.reason_encrypted or b"").decode().endswith(canary.name)
        assert canary.name in forget_spec(settings, first).subject_names
        shown = notes_of(session, first)
        assert {n.kind.value for n in shown} == {
            "filing_note",
            "identity_reference",
            "approval_note",
        }
        assert all(n.matches_log for n in shown), [(n.kind, n.matches_log) for n in shown]
        (rules_row,) = session.scalars(select(RuleSetVersion))
        entry = json.loads(bytes(rules_row.rules_encrypted)[4:])[str(ids[0])]
        assert key_id_of(base64.b64decode(entry)) == first.key_id
        assert str(ids[0]) in per_request_rule_sets(settings, rules_row)
        events = list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "request.keys_created"))
        )
        assert len(events) == 2 and all(canary.token not in str(e.details) for e in events)
        words = describe_event({"action": events[0].action, "details": events[0].details})
        assert "its own encryption key" in words and "key_ids" not in words
        sealed = [r.reason_encrypted for r in session.scalars(select(ErasureRequest))] + [
            first.forget_content,
            base64.b64decode(entry),
        ]
        sealed += [n.text_encrypted for n in session.scalars(select(RequestNote))]
        sealed = [bytes(b) for b in sealed if b is not None]
        assert len(sealed) >= 8 and all(is_sealed(b) for b in sealed)
        # A retry of a request filed before the keys, with its idempotency key, is the same one.
        retried, created = file_request(
            session,
            settings,
            NewRequest(
                canary.identifier,
                f"Letter from {canary.name}",
                None,
                {"names": [canary.name], "facts": [{"answer": canary.fact}]},
                f"legacy-{ids[0]}",
            ),
            actor="dpo",
        )
        assert retried.id == ids[0] and not created
    engine.dispose()

    assert _shred(legacy_db) == 2
    dump = pg_dump(legacy_db)
    assert not canary.found_in(dump)
    for needle in (canary.identifier, canary.name, canary.fact, f"passport {canary.token}"):
        assert needle.encode() not in dump
    for blob in sealed:  # the copies a backup taken after the re-sealing kept
        with pytest.raises(KeyDestroyed):
            open_sealed(settings, blob)


def test_without_sealing_the_plain_reason_is_kept(legacy_db: str) -> None:
    canary = Canary()
    _upgraded_with_legacy_rows(legacy_db, canary)
    assert _shred(legacy_db) == 0  # no key of their own: the retention job cannot shred them
    dump = pg_dump(legacy_db)
    assert f"Letter from {canary.name}".encode() in dump
    assert f"passport {canary.token}".encode() in dump
