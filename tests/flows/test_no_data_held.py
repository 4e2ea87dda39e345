"""Discovery before decision and the "no personal data held" outcome: before approval a
request shows which models hold its subject (counts only); a subject held nowhere ends as
"completed: no personal data held" with a certificate of where lethe looked, not as erased;
a held subject ends erased. The DPO's words on the way are stored encrypted, shown back, and
the log keeps only a keyed hash of them."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.enums import NoteKind, RequestOutcome
from service.db.tables import AuditEvent, Certificate, ErasureRequest, RequestNote
from service.erasure.filing import get_request
from service.erasure.notes import notes_of
from service.planner.discovery import discover, holds_nothing
from tests.support.api import SentTasks, auth
from tests.support.exact import a_trained_subject, train_subject
from tests.support.sample_data import MODEL_BODY
from tests.support.tasks import drain

NAME = MODEL_BODY["name"]


def _file(client: TestClient, tokens: dict[str, str], subject: str) -> str:
    h = auth(tokens["dpo"])
    body = {"subject_id": subject, "reason": "art 17", "scope": [NAME]}
    return str(client.post("/v1/requests", json=body, headers=h).json()["id"])


def _approve(client: TestClient, tokens: dict[str, str], rid: str, note: str) -> None:
    h = auth(tokens["dpo"])
    assert client.post(f"/v1/requests/{rid}/approve", json={"reason": note}, headers=h).is_success


def test_discovery_then_no_data_held_or_erased(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    held = a_trained_subject(session)
    records = len(train_subject(session, held))
    nobody = _file(app_client, tokens, "never-a-customer@example.org")
    somebody = _file(app_client, tokens, held)

    [none] = discover(session, get_request(session, nobody))
    [some] = discover(session, get_request(session, somebody))
    assert (none.model, none.training, none.held_out, none.holds) == (NAME, 0, 0, False)
    assert none.records_searched == some.records_searched > 0
    assert some.training == records and some.holds
    assert holds_nothing([none]) and not holds_nothing([some])

    _approve(app_client, tokens, nobody, "nothing expected; approving to get the certificate")
    _approve(app_client, tokens, somebody, "checked with legal")
    drain(sent_tasks)
    session.expire_all()
    empty, erased = get_request(session, nobody), get_request(session, somebody)
    assert (empty.status, empty.outcome) == ("completed", RequestOutcome.no_data_held)
    assert (erased.status, erased.outcome) == ("completed", RequestOutcome.erased)
    [cert] = session.scalars(select(Certificate).where(Certificate.request_id == empty.id))
    assert cert.kind == "no_data_held" and cert.body["records_found"] == 0
    assert cert.body["records_searched"]["train"] + cert.body["records_searched"]["holdout"] == (
        none.records_searched
    )
    assert f"lethe looked for this person in {NAME}" in cert.body["plain_words"]
    completed = session.scalar(
        select(AuditEvent.details).where(
            AuditEvent.request_id == empty.id, AuditEvent.action == "request.completed"
        )
    )
    assert completed is not None and completed["outcome"] == "no_data_held"

    # The approval note: encrypted in its row, shown back, a keyed hash (not SHA-256) in the log.
    [note] = notes_of(session, erased)
    assert (note.kind, note.text, note.matches_log) == (
        NoteKind.approval_note,
        "checked with legal",
        True,
    )
    row = session.scalar(select(RequestNote).where(RequestNote.request_id == erased.id))
    assert row is not None and b"checked with legal" not in row.text_encrypted
    approved = session.scalar(
        select(AuditEvent.details).where(
            AuditEvent.request_id == erased.id, AuditEvent.action == "request.approved"
        )
    )
    assert approved is not None and "checked with legal" not in str(approved)
    plain_sha = hashlib.sha256(b"checked with legal").hexdigest()
    assert approved["reason_hmac"] != plain_sha and plain_sha not in str(approved)
    assert (
        session.scalar(select(ErasureRequest.decision_reason).where(ErasureRequest.id == erased.id))
        is None
    )


def test_a_nul_byte_identifier_is_refused_at_filing(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    h = auth(tokens["dpo"])
    for bad in ("ab\x00cd", "   ", "line\nbreak"):
        r = app_client.post("/v1/requests", json={"subject_id": bad, "reason": "x"}, headers=h)
        assert r.status_code == 422, bad
        assert r.json()["error"]["code"] in ("invalid_identifier", "validation_error")
        assert bad.strip() not in r.text or not bad.strip()
