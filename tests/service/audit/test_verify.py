"""Attacks on the audit log, run as an attacker would (the project's own public hashing
functions, the database's own roles), then the periodic checkpointing runs and a new ordinary
event is written: every surface (API, incremental API, console, ``lethe audit verify``, JSON,
CSV and PDF exports, the request report, /readyz) must report the tampering and name where it
starts. The control: a signer without the consistency check signs the rewritten head and
notices nothing.

Each test runs on a database of its own (the service, its reaper and the CLI commit for real,
as the attacker does), with a checkpoint store of its own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, text
from typer.testing import CliRunner

from service.audit.anchor import Anchor
from service.audit.chain import canonical, chain_hash
from service.audit.verify import verify_log
from service.core.config import Settings, get_settings
from tests.support.api import SentTasks, auth
from tests.support.console import PASSWORD, csrf_of, form_token, sign_in
from tests.support.db import fresh_database
from tests.support.pdf_tools import pdf_text


@dataclass
class Box:
    client: TestClient
    tokens: dict[str, str]
    attacker: Engine
    anchor: Anchor
    tmp: Path


@pytest.fixture
def box(
    pg_server: str,
    settings: Settings,
    sent_tasks: SentTasks,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Box]:
    from service.api.tokens import create_token
    from service.app.factory import create_app
    from service.db.session import transaction
    from service.web.accounts import create_user
    from workers.base import DbTask

    with fresh_database(pg_server, prefix="lethe_attack") as url:
        monkeypatch.setenv("LETHE_DATABASE_URL", url)
        monkeypatch.setenv("LETHE_AUDIT_CHECKPOINT_URL", str(tmp_path / "checkpoints"))
        get_settings.cache_clear()
        for name in ("_factory", "_anchor", "factory_override"):
            monkeypatch.setattr(DbTask, name, None)
        monkeypatch.setattr("service.api.routes_health._last", (0.0, {}))
        app = create_app(get_settings())
        with transaction(app.state.session_factory) as s:
            tokens = {r: create_token(s, f"t-{r}", r, actor="test") for r in ("dpo", "auditor")}
            create_user(s, "auditor@example.test", "auditor", PASSWORD, actor="test")
        attacker = create_engine(url)  # the embedded server's superuser, owner of every table
        try:
            with TestClient(
                app, base_url="https://testserver", raise_server_exceptions=False
            ) as client:
                yield Box(client, tokens, attacker, app.state.anchor, tmp_path)
        finally:
            attacker.dispose()
            get_settings.cache_clear()


# --- the service, used as it is every day -------------------------------------------------


def _file(box: Box) -> str:
    body = {"subject_id": f"subject-{uuid.uuid4().hex[:8]}", "reason": "art 17"}
    r = box.client.post("/v1/requests", json=body, headers=auth(box.tokens["dpo"]))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _history(box: Box) -> str:
    """A rejected request among ordinary ones; returns the rejected request's id."""
    _file(box)
    rejected = _file(box)
    r = box.client.post(
        f"/v1/requests/{rejected}/reject",
        json={"reason": "the identity could not be verified"},
        headers=auth(box.tokens["dpo"]),
    )
    assert r.status_code == 200, r.text
    _file(box)
    return rejected


def _checkpointing_runs_then_an_ordinary_event(box: Box) -> None:
    from workers.tasks.reaper import reap_stuck_jobs

    reap_stuck_jobs()
    _file(box)
    _file(box)


# --- the attacker -----------------------------------------------------------------------


def _rows(conn: Connection, after: int = 0) -> list[Any]:
    return list(
        conn.execute(
            text(
                "SELECT seq, occurred_at, actor, action, target_type, target_id, request_id, "
                "details, prev_hash, hash, mac FROM audit_events WHERE seq > :s ORDER BY seq"
            ),
            {"s": after},
        )
    )


def _hash_of(row: Any, prev: str, **changes: Any) -> str:
    fields = {
        k: getattr(row, k)
        for k in (
            "seq",
            "occurred_at",
            "actor",
            "action",
            "target_type",
            "target_id",
            "request_id",
            "details",
        )
    }
    return chain_hash(prev, canonical(**{**fields, **changes}))


def _rehash_from(conn: Connection, seq: int) -> None:
    """Recompute prev_hash and hash from ``seq`` on, covering the tracks (triggers off)."""
    prev = conn.execute(text("SELECT hash FROM audit_events WHERE seq = :s"), {"s": seq - 1})
    previous = prev.scalar() or "0" * 64
    for row in _rows(conn, seq - 1):
        new = _hash_of(row, previous)
        conn.execute(
            text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s"),
            {"p": previous, "h": new, "s": row.seq},
        )
        previous = new


def _as_owner(box: Box) -> Any:
    class _Owner:
        def __enter__(self) -> Connection:
            self.ctx = box.attacker.begin()
            conn = self.ctx.__enter__()
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            self.conn = conn
            return conn

        def __exit__(self, *exc: Any) -> None:
            self.conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
            self.ctx.__exit__(*exc)

    return _Owner()


def _rewrite_rejection_as_completion(box: Box, request_id: str) -> int:
    with _as_owner(box) as conn:
        seq = conn.execute(
            text(
                "SELECT seq FROM audit_events WHERE action = 'request.rejected' AND request_id = :r"
            ),
            {"r": request_id},
        ).scalar_one()
        conn.execute(
            text(
                "UPDATE audit_events SET action = 'request.completed', "
                'details = \'{"outcome": "erased"}\' WHERE seq = :s'
            ),
            {"s": seq},
        )
        _rehash_from(conn, seq)
    return int(seq)


def _insert_only_forgery(box: Box, request_id: str, mac: str | None) -> int:
    """A role with only INSERT (and SELECT) on audit_events appends a 'completed'."""
    with box.attacker.begin() as conn:
        conn.execute(
            text(
                "DO $$ BEGIN CREATE ROLE forger NOLOGIN; EXCEPTION WHEN duplicate_object "
                "THEN NULL; END $$"
            )
        )
        conn.execute(text("GRANT SELECT, INSERT ON audit_events TO forger"))
        conn.execute(text("SET LOCAL ROLE forger"))
        head = _rows(conn)[-1]
        from service.db.base import utcnow

        forged = {
            "seq": head.seq + 1,
            "occurred_at": utcnow(),
            "actor": "dpo-token",
            "action": "request.completed",
            "target_type": "request",
            "target_id": request_id,
            "request_id": uuid.UUID(request_id),
            "details": {"outcome": "erased"},
        }
        digest = chain_hash(head.hash, canonical(**forged))
        conn.execute(
            text(
                "INSERT INTO audit_events (seq, occurred_at, actor, action, target_type, "
                "target_id, request_id, details, prev_hash, hash, mac) VALUES (:seq, "
                ":occurred_at, :actor, :action, :target_type, :target_id, :request_id, "
                "CAST(:details AS jsonb), :prev, :hash, :mac)"
            ),
            {
                **forged,
                "details": json.dumps(forged["details"]),
                "prev": head.hash,
                "hash": digest,
                "mac": mac,
            },
        )
    return int(head.seq + 1)


# --- every surface ----------------------------------------------------------------------


def _every_surface_reports(box: Box, request_id: str, bad_seq: int, kinds: set[str]) -> None:
    h = auth(box.tokens["auditor"])
    c = box.client
    for params in ({}, {"incremental": "true"}):
        api = c.get("/v1/audit/verify", params=params, headers=h).json()
        assert api["ok"] is False, api
        assert api["first_broken_seq"] == bad_seq and api["kind"] in kinds, api
    exported = c.get("/v1/audit/export", headers=h).json()
    assert exported["chain"]["ok"] is False and exported["chain"]["first_broken_seq"] == bad_seq
    assert exported["anchor"]["checkpoint"] is None  # nothing tampered gets signed
    csv = c.get("/v1/audit/export", params={"format": "csv"}, headers=h)
    assert csv.headers["x-audit-verified"] == "false" and "x-audit-checkpoint" not in csv.headers
    pdf, _ = pdf_text(c.get("/v1/audit/export", params={"format": "pdf"}, headers=h).content)
    assert f"does NOT verify, from event #{bad_seq}" in pdf and "log verifies" not in pdf
    report = c.get(f"/v1/requests/{request_id}/report", headers=h).json()
    assert report["chain"]["ok"] is False and report["chain"]["first_broken_seq"] == bad_seq
    sign_in(c, "auditor@example.test")
    console = c.post("/console/audit/verify", data={"csrf_token": form_token(c, "/console/audit")})
    assert f"does not verify, from event #{bad_seq}" in console.text
    assert "The audit log verifies" not in console.text
    assert 'id="tamper-banner"' in c.get("/console/audit").text
    assert csrf_of(console.text)
    cli = _cli_verify()
    assert cli.exit_code == 1, cli.output
    assert json.loads(cli.stdout)["first_broken_seq"] == bad_seq
    ready = c.get("/readyz").json()
    assert ready["audit_intact"] is False and ready["ready"] is False


def _cli_verify(*args: str) -> Any:
    from service.cli import app

    return CliRunner().invoke(app, ["audit", "verify", *args])


# --- the attacks ------------------------------------------------------------------------


def test_an_untouched_log_verifies_everywhere(box: Box) -> None:
    """Without an attack every surface says so (the attack tests below can fail)."""
    rejected = _history(box)
    _checkpointing_runs_then_an_ordinary_event(box)
    h = auth(box.tokens["auditor"])
    c = box.client
    for params in ({}, {"incremental": "true"}):
        api = c.get("/v1/audit/verify", params=params, headers=h).json()
        assert api["ok"] is True and api["checkpoints_checked"] >= 5, api
    csv = c.get("/v1/audit/export", params={"format": "csv"}, headers=h)
    assert csv.headers["x-audit-verified"] == "true" and "x-audit-checkpoint" in csv.headers
    pdf, _ = pdf_text(c.get("/v1/audit/export", params={"format": "pdf"}, headers=h).content)
    assert "The audit log verifies" in pdf
    report = c.get(f"/v1/requests/{rejected}/report", headers=h).json()
    assert report["chain"]["ok"] is True and report["anchor"]["checkpoint"] is not None
    assert _cli_verify().exit_code == 0
    assert c.get("/readyz").json()["audit_intact"] is True
    assert box.anchor.tamper_records() == []
    sign_in(c, "auditor@example.test")
    assert 'id="tamper-banner"' not in c.get("/console/audit").text


def test_rewrite_of_a_rejection_into_a_completion(box: Box) -> None:
    rejected = _history(box)
    assert verify_log_ok(box)
    seq = _rewrite_rejection_as_completion(box, rejected)
    _checkpointing_runs_then_an_ordinary_event(box)
    _every_surface_reports(box, rejected, seq, {"not_authenticated"})
    kinds = {p.kind for p in box.anchor.tamper_records()}
    assert kinds & {"checkpoint_mismatch", "not_authenticated"}


def test_insert_only_forged_completion(box: Box) -> None:
    rejected = _history(box)
    seq = _insert_only_forgery(box, rejected, mac=None)
    _checkpointing_runs_then_an_ordinary_event(box)
    _every_surface_reports(box, rejected, seq, {"not_authenticated"})


def test_insert_only_forgery_with_a_stolen_older_mac(box: Box) -> None:
    rejected = _history(box)
    with box.attacker.connect() as conn:
        stolen = _rows(conn)[-1].mac  # a genuine MAC, of another row
    assert stolen
    seq = _insert_only_forgery(box, rejected, mac=stolen)
    _checkpointing_runs_then_an_ordinary_event(box)
    _every_surface_reports(box, rejected, seq, {"not_authenticated"})


def test_rewrite_of_a_certificates_payload(box: Box) -> None:
    from service.audit import append_event
    from service.db.session import transaction

    rejected = _history(box)
    body = {"kind": "exact_retrain", "model": "credit", "records_erased": {"train": 2}}
    with transaction(box.client.app.state.session_factory) as s:  # type: ignore[attr-defined]
        issued = append_event(
            s,
            actor="worker",
            action="certificate.issued",
            target_type="model",
            target_id="credit",
            request_id=uuid.UUID(rejected),
            details={"kind": "exact_retrain", "certificate": body},
        ).seq
    _file(box)
    with _as_owner(box) as conn:
        forged = {**body, "records_erased": {"train": 20}}
        conn.execute(
            text("UPDATE audit_events SET details = CAST(:d AS jsonb) WHERE seq = :s"),
            {"d": json.dumps({"kind": "exact_retrain", "certificate": forged}), "s": issued},
        )
        _rehash_from(conn, issued)
    _checkpointing_runs_then_an_ordinary_event(box)
    _every_surface_reports(box, rejected, issued, {"not_authenticated"})


def test_deleting_the_last_two_events(box: Box) -> None:
    rejected = _history(box)
    with box.attacker.connect() as conn:
        last = _rows(conn)[-1].seq
    with _as_owner(box) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > :s"), {"s": last - 2})
    # New events reuse the deleted sequence numbers, chained and authenticated by the service.
    _checkpointing_runs_then_an_ordinary_event(box)
    _every_surface_reports(box, rejected, last - 1, {"checkpoint_mismatch", "truncated"})


def test_reordering_two_events(box: Box) -> None:
    rejected = _history(box)
    with _as_owner(box) as conn:
        a, b = (r.seq for r in _rows(conn)[2:4])
        conn.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = :a"), {"a": a})
        conn.execute(text("UPDATE audit_events SET seq = :a WHERE seq = :b"), {"a": a, "b": b})
        conn.execute(text("UPDATE audit_events SET seq = :b WHERE seq = -1"), {"b": b})
        _rehash_from(conn, a)
    _checkpointing_runs_then_an_ordinary_event(box)
    _every_surface_reports(box, rejected, a, {"not_authenticated"})


def test_a_replayed_old_checkpoint_does_not_hide_a_cut(box: Box) -> None:
    rejected = _history(box)
    old = box.anchor.latest()
    assert old is not None
    kept = box.tmp / "old-checkpoint.json"
    kept.write_text(json.dumps(old.as_dict()))
    for _ in range(3):
        _file(box)
    with _as_owner(box) as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq > :s"), {"s": old.seq})
    # The old checkpoint alone is satisfied: the rows it covers are untouched ...
    with box_session(box) as session:
        assert verify_log(session, None, kept=(old, box.anchor.public_key)).ok
    # ... but every surface checks every stored checkpoint, so the cut is named.
    _checkpointing_runs_then_an_ordinary_event(box)
    _every_surface_reports(box, rejected, old.seq + 1, {"checkpoint_mismatch", "truncated"})
    replayed = _cli_verify("--checkpoint", str(kept))
    assert replayed.exit_code == 1


def test_control_a_signer_without_the_consistency_check_signs_the_rewrite(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rewrite against the signer of old: it signs the rewritten head and records
    nothing, so /readyz and the metrics stay green (the MACs still catch it in a verify)."""
    from workers.base import DbTask

    rejected = _history(box)
    control = Anchor(box.anchor._key, box.anchor.store, consistency_check=False)
    monkeypatch.setattr(DbTask, "_anchor", control)
    seq = _rewrite_rejection_as_completion(box, rejected)
    from workers.tasks.reaper import reap_stuck_jobs

    reap_stuck_jobs()
    signed = control.latest()
    with box.attacker.connect() as conn:
        head = _rows(conn)[-1]
    assert signed is not None and (signed.seq, signed.head_hash) == (head.seq, head.hash)
    assert signed.seq > seq and control.tamper_records() == []
    assert box.client.get("/readyz").json()["audit_intact"] is True


# --- helpers used above -----------------------------------------------------------------


def box_session(box: Box) -> Any:
    from service.db.session import database_url, session_factory

    return session_factory(database_url(get_settings()))()


def verify_log_ok(box: Box) -> bool:
    with box_session(box) as session:
        return verify_log(session, box.anchor).ok
