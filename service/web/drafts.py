"""What a DPO typed into the filing form, kept server-side (encrypted, a day at most) under the
form's random key: shown again after a validation error, after the session expired mid-form
(the form is stashed before the sign-in page, never in a URL) and on Back after filing.
Functions flush; the handler commits."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from service.core.config import Settings
from service.core.security import decrypt, encrypt
from service.db.base import utcnow
from service.db.tables import ConsoleDraft

KEEP_FOR = timedelta(hours=24)
# The filing form's fields kept (never the CSRF token).
FIELDS = (
    "subject_id",
    "names",
    "emails",
    "phones",
    "facts",
    "scope_kind",
    "legal_ground",
    "identity_method",
    "identity_reference",
    "ticket_ref",
    "notes",
)
MAX_FIELD = 100_000
Draft = dict[str, str | list[str]]


def from_form(form: FormData) -> Draft:
    draft: Draft = {}
    for name in FIELDS:
        value = form.get(name)
        if isinstance(value, str):
            draft[name] = value[:MAX_FIELD]
    draft["scope"] = [m[:100] for m in form.getlist("scope") if isinstance(m, str)][:200]
    return draft


def valid_key(key: str) -> bool:
    return 16 <= len(key) <= 64 and all(c in "0123456789abcdef" for c in key)


def save(
    session: Session, settings: Settings, user_id: uuid.UUID, form_key: str, draft: Draft
) -> None:
    sealed = encrypt(settings, json.dumps(draft).encode())
    now = utcnow()
    session.execute(delete(ConsoleDraft).where(ConsoleDraft.updated_at < now - KEEP_FOR))
    session.execute(
        insert(ConsoleDraft)
        .values(
            id=uuid.uuid4(),
            user_id=user_id,
            form_key=form_key,
            content_encrypted=sealed,
            updated_at=now,
        )
        .on_conflict_do_update(
            index_elements=["user_id", "form_key"],
            set_={"content_encrypted": sealed, "updated_at": now},
        )
    )
    session.flush()


def load(session: Session, settings: Settings, user_id: uuid.UUID, form_key: str) -> Draft | None:
    row = session.scalar(
        select(ConsoleDraft).where(
            ConsoleDraft.user_id == user_id,
            ConsoleDraft.form_key == form_key,
            ConsoleDraft.updated_at >= utcnow() - KEEP_FOR,
        )
    )
    if row is None:
        return None
    loaded: Draft = json.loads(decrypt(settings, row.content_encrypted))
    return loaded


def discard(session: Session, user_id: uuid.UUID, form_key: str) -> None:
    session.execute(
        delete(ConsoleDraft).where(
            ConsoleDraft.user_id == user_id, ConsoleDraft.form_key == form_key
        )
    )
    session.flush()
