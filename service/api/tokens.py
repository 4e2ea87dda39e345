"""API tokens: only their SHA-256 is stored; the token is shown once, at creation."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.security import hash_token, new_api_token
from service.db.enums import Role
from service.db.tables import ApiToken


def create_token(session: Session, name: str, role: str, actor: str) -> str:
    token = new_api_token()
    row = ApiToken(id=uuid.uuid4(), name=name, role=Role(role), token_hash=hash_token(token))
    session.add(row)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="token.created",
        target_type="token",
        target_id=str(row.id),
        details={"name": name, "role": role},
    )
    return token
