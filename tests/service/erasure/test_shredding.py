"""Crypto-shredding: an ended request's data key is destroyed once its retention has passed;
what it sealed can no longer be read, and the audit log records which key went and when."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import Settings, get_settings
from service.core.keys import KeyDestroyed, keys_for
from service.core.security import open_sealed
from service.db.base import utcnow
from service.db.enums import RuleSetStatus
from service.db.tables import AuditEvent, RequestNote, RuleSetVersion
from service.erasure.decisions import verify_identity
from service.erasure.filing import NewRequest, file_request, get_request
from service.erasure.lifecycle import cancel_request, reject_request
from service.erasure.notes import notes_of
from service.erasure.shredding import policy_words, shred_due
from service.reports.words import describe_event
from tests.support.db import bare_generative_model

CANARY = "canary.shred@example.org"


def _file(session: Session, settings: Settings) -> uuid.UUID:
    new = NewRequest(
        subject_identifier=CANARY,
        reason="Canary Person asked by letter",
        scope=None,
        forget={"names": ["Canary Person"], "facts": [{"answer": "Canary lives in Ghent"}]},
        idempotency_key=None,
        identity_required=True,
    )
    request, _ = file_request(session, settings, new, actor="test")
    verify_identity(session, request, "id_document", "passport ref CANARY-77", "test")
    return request.id


def _events(session: Session, request_id: uuid.UUID, action: str) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent).where(
                AuditEvent.request_id == request_id, AuditEvent.action == action
            )
        )
    )


def test_a_rejected_request_is_shredded_after_its_retention(
    session: Session, settings: Settings
) -> None:
    request_id = _file(session, settings)
    request = get_request(session, request_id)
    reject_request(session, request, "test", "Canary's claim is unfounded", "other")
    assert request.key_id is not None and keys_for(settings).exists(request.key_id)
    sealed = [request.forget_content, request.reason_encrypted] + [
        n.text_encrypted
        for n in session.scalars(select(RequestNote).where(RequestNote.request_id == request_id))
    ]
    assert all(b is not None and b"Canary" not in b for b in sealed)
    assert (
        open_sealed(settings, request.reason_encrypted or b"") == b"Canary Person asked by letter"
    )

    ended = request.decided_at
    assert ended is not None
    early = ended + timedelta(days=settings.retention_rejected_days - 1)
    assert shred_due(session, settings, "retention", early) == 0
    assert shred_due(session, settings, "retention", ended + timedelta(days=31)) == 1

    assert not keys_for(settings).exists(request.key_id)
    assert request.forget_content is None and request.reason_encrypted is None
    for blob in sealed:  # the copies a backup or WAL kept: unreadable for good
        with pytest.raises(KeyDestroyed):
            open_sealed(settings, blob or b"")
    shown = notes_of(session, request)
    assert shown and all(n.destroyed and "Canary" not in n.text for n in shown)
    (event,) = _events(session, request_id, "request.keys_destroyed")
    assert event.details["key_ids"] == [request.key_id]
    assert request.key_id in describe_event({"action": event.action, "details": event.details})
    # Nothing of the canary in any event of the request.
    for e in [*_events(session, request_id, "request.received"), event]:
        assert "canary" not in str(e.details).lower()
    assert shred_due(session, settings, "retention", ended + timedelta(days=32)) == 0


def test_rules_in_force_keep_their_key_until_retired(session: Session, settings: Settings) -> None:
    request = get_request(session, _file(session, settings))
    cancel_request(session, request, "test", "withdrawn")
    model = bare_generative_model(session, "gen")
    rules = RuleSetVersion(
        id=uuid.uuid4(),
        model_id=model.id,
        version=1,
        status=RuleSetStatus.active,
        rules_encrypted=b"",
        rule_count=1,
        request_ids=[str(request.id)],
        calibration={},
    )
    session.add(rules)
    session.flush()
    later = utcnow() + timedelta(days=365)
    assert shred_due(session, settings, "retention", later) == 0
    rules.status = RuleSetStatus.superseded
    session.flush()
    assert shred_due(session, settings, "retention", later) == 1


def test_shredding_switched_off_keeps_the_key(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = get_request(session, _file(session, settings))
    cancel_request(session, request, "test", "withdrawn")
    monkeypatch.setattr(settings, "crypto_shredding", False)
    assert shred_due(session, settings, "retention", utcnow() + timedelta(days=365)) == 0
    assert keys_for(settings).exists(request.key_id or "")
    assert any("switched off" in line for line in policy_words(settings))


def test_the_policy_in_words(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "retention_rejected_days", 0.5)
    monkeypatch.setattr(settings, "retention_completed_days", 0.0)
    words = " ".join(policy_words(settings))
    assert "Completed requests: the requester's data is destroyed as soon as it ends" in words
    assert "12 hours after it ends" in words and "30 days after it ends" in words


def test_a_retention_of_zero_destroys_the_key_as_the_request_ends(
    session: Session, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "retention_cancelled_days", 0.0)
    request = get_request(session, _file(session, settings))
    cancel_request(session, request, "test", "withdrawn by Canary")
    assert request.keys_destroyed_at is not None
    assert not keys_for(settings).exists(request.key_id or "")
    assert [e.details["key_ids"] for e in _events(session, request.id, "request.keys_destroyed")]
