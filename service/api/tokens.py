"""API tokens: only their SHA-256 is stored; the token is shown once, at creation. Tokens
expire (``DEFAULT_EXPIRY_DAYS`` unless told otherwise, at most ``MAX_EXPIRY_DAYS``), can be
listed (never their secret), and their names cannot pass for a console account or a lethe
process in the audit log."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.errors import DomainError, invalid
from service.core.security import hash_token, new_api_token
from service.db.base import utcnow
from service.db.enums import Role
from service.db.tables import ApiToken

TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
# Console accounts act as "role:user-1a2b3c4d"; processes as worker, reaper, system, cli…
_LOOKS_LIKE_PERSON = re.compile(r"^user-", re.IGNORECASE)
RESERVED_NAMES = frozenset(
    {"worker", "reaper", "system", "cli", "setup", "demo", "anonymous", "lethe", "invite"}
)
DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 3650


def check_token_name(name: str) -> None:
    if not TOKEN_NAME.match(name):
        raise invalid("invalid_token_name", "token names use letters, digits and . _ @ -")
    if _LOOKS_LIKE_PERSON.match(name) or name.casefold() in RESERVED_NAMES:
        raise invalid(
            "reserved_token_name",
            "token names cannot start with 'user-' or be a name lethe uses for its own actors",
        )


def create_token(
    session: Session, name: str, role: str, actor: str, *, expires_in_days: int | None = None
) -> str:
    """``expires_in_days``: None means the default (DEFAULT_EXPIRY_DAYS); no token is forever."""
    check_token_name(name)
    days = DEFAULT_EXPIRY_DAYS if expires_in_days is None else expires_in_days
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise invalid("invalid_expiry", f"tokens expire after 1 to {MAX_EXPIRY_DAYS} days")
    token = new_api_token()
    expires_at = utcnow() + timedelta(days=days)
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
            "expires_at": expires_at.isoformat(),
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


def token_state(row: ApiToken, now: datetime | None = None) -> str:
    moment = now or utcnow()
    if row.revoked_at is not None and row.revoked_at <= moment:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= moment:
        return "expired"
    return "active"


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token ever made (the secret is never stored, so never shown), newest first."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc())))
