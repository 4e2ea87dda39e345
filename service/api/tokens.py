"""API tokens: only their SHA-256 is stored; the token is shown once, at creation."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.errors import DomainError, invalid
from service.core.security import hash_token, new_api_token
from service.db.base import utcnow
from service.db.enums import Role
from service.db.tables import ApiToken

TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


def create_token(
    session: Session, name: str, role: str, actor: str, *, expires_in_days: int | None = None
) -> str:
    if not TOKEN_NAME.match(name):
        raise invalid("invalid_token_name", "token names use letters, digits and . _ @ -")
    token = new_api_token()
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    row = ApiToken(
        id=uuid.uuid4(),
        name=name,
        role=Role(role),
        token_hash=hash_token(token),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="token.created",
        target_type="token",
        target_id=str(row.id),
        details={
            "name": name,
            "role": role,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return token


def revoke_tokens(session: Session, name: str, actor: str) -> int:
    """Revoke every live token with this name (rotation: create the new one first)."""
    rows = session.scalars(
        select(ApiToken)
        .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        .with_for_update()
    ).all()
    if not rows:
        raise DomainError(404, "token_not_found", "no live token has that name")
    now = utcnow()
    for row in rows:
        row.revoked_at = now
        append_event(
            session,
            actor=actor,
            action="token.revoked",
            target_type="token",
            target_id=str(row.id),
            details={"name": name},
        )
    return len(rows)
