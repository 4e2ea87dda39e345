"""The certificates table is a cache of the certificates the audit log carries: a row that
differs from its ``certificate.issued`` event (its body, its hash, or an event that is not a
certificate of that request) is named, and the chained body is what is shown."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy.orm import Session

from service.audit import append_event
from service.db.enums import CertificateKind
from service.db.tables import Certificate
from service.erasure.certificates import chained_bodies, matches_chain

BODY: dict[str, Any] = {"kind": "exact_retrain", "model": "credit", "records_erased": 2}


def _issued(session: Session, request_id: uuid.UUID, body: dict[str, Any]) -> Certificate:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    event = append_event(
        session,
        actor="worker",
        action="certificate.issued",
        target_type="model",
        target_id="m",
        request_id=request_id,
        details={"kind": body["kind"], "certificate": body},
    )
    # Not persisted: the check reads only the audit log and the row it is given.
    return Certificate(
        request_id=request_id,
        kind=CertificateKind.exact_retrain,
        body=json.loads(canonical),
        body_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        audit_seq=event.seq,
    )


def test_a_row_that_matches_its_event(session: Session) -> None:
    cert = _issued(session, uuid.uuid4(), BODY)
    chained = chained_bodies(session, [cert])
    assert chained[cert.audit_seq] == BODY and matches_chain(cert, chained[cert.audit_seq])


def test_a_rewritten_row_is_named_and_the_log_is_shown(session: Session) -> None:
    cert = _issued(session, uuid.uuid4(), BODY)
    cert.body = {**BODY, "records_erased": 20}  # the table rewritten, the log untouched
    chained = chained_bodies(session, [cert])
    assert chained[cert.audit_seq] == BODY
    assert not matches_chain(cert, chained[cert.audit_seq])
    honest = _issued(session, uuid.uuid4(), BODY)
    honest.body_hash = "0" * 64  # the hash alone rewritten
    assert not matches_chain(honest, chained_bodies(session, [honest])[honest.audit_seq])


def test_a_row_pointing_at_another_event_or_request(session: Session) -> None:
    cert = _issued(session, uuid.uuid4(), BODY)
    stolen = Certificate(
        request_id=uuid.uuid4(),  # another request's certificate event
        kind=CertificateKind.exact_retrain,
        body=cert.body,
        body_hash=cert.body_hash,
        audit_seq=cert.audit_seq,
    )
    other = append_event(
        session,
        actor="t",
        action="request.received",
        target_type="r",
        target_id="x",
        request_id=cert.request_id,
    )
    pointing = Certificate(
        request_id=cert.request_id,
        kind=CertificateKind.exact_retrain,
        body=cert.body,
        body_hash=cert.body_hash,
        audit_seq=other.seq,
    )
    found = chained_bodies(session, [stolen, pointing])
    assert found[other.seq] is None and not matches_chain(pointing, None)
    assert chained_bodies(session, [stolen])[cert.audit_seq] is None
