"""Console accounts: argon2 password hashes, roles as the API's, one-time invites.

These functions flush and never commit; the CLI (``lethe user create|list|disable``) and the
console's handlers own the transaction.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.errors import conflict, invalid
from service.db.base import utcnow
from service.db.enums import Role
from service.db.tables import ConsoleInvite, ConsoleUser

_HASHER = PasswordHasher()
# Verified against when the e-mail is unknown, so both cases take the same time.
_DUMMY_HASH = _HASHER.hash("not-a-password-" + secrets.token_hex(8))
MIN_PASSWORD_LENGTH = 12


def normalise_email(email: str) -> str:
    return email.strip().casefold()


def _check_new(email: str, password: str) -> str:
    clean = normalise_email(email)
    if "@" not in clean or len(clean) > 254 or len(clean) < 3:
        raise invalid("invalid_email", "the e-mail address is not valid")
    if len(password) < MIN_PASSWORD_LENGTH or len(password) > 1000:
        raise invalid("weak_password", f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    return clean


def create_user(session: Session, email: str, role: str, password: str, actor: str) -> ConsoleUser:
    clean = _check_new(email, password)
    try:
        role_value = Role(role)
    except ValueError:
        raise invalid(
            "unknown_role", "the role is not one of dpo, ml_engineer, auditor, admin"
        ) from None
    if session.scalar(select(ConsoleUser.id).where(ConsoleUser.email == clean)) is not None:
        raise conflict("user_exists", "an account with this e-mail address exists")
    user = ConsoleUser(
        id=uuid.uuid4(),
        email=clean,
        role=role_value,
        password_hash=_HASHER.hash(password),
        created_by=actor,
    )
    session.add(user)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="user.created",
        target_type="user",
        target_id=str(user.id),
        details={"role": role_value.value},
    )
    return user


def list_users(session: Session) -> list[ConsoleUser]:
    return list(session.scalars(select(ConsoleUser).order_by(ConsoleUser.email)))


def disable_user(session: Session, email: str, actor: str) -> ConsoleUser:
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == normalise_email(email)))
    if user is None:
        raise invalid("unknown_user", "no account with this e-mail address")
    if user.disabled_at is None:
        user.disabled_at = utcnow()
        session.flush()
        append_event(
            session,
            actor=actor,
            action="user.disabled",
            target_type="user",
            target_id=str(user.id),
        )
    return user


def authenticate(session: Session, email: str, password: str) -> ConsoleUser | None:
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.email == normalise_email(email)))
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled_at is not None:
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
        session.flush()
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def first_admin_invite(session: Session, hours: int = 24) -> str | None:
    """A one-time token for the first admin, or None once any account exists."""
    if session.scalar(select(func.count()).select_from(ConsoleUser)):
        return None
    token = secrets.token_urlsafe(24)
    session.add(
        ConsoleInvite(
            id=uuid.uuid4(),
            token_hash=_token_hash(token),
            role=Role.admin,
            expires_at=utcnow() + timedelta(hours=hours),
        )
    )
    session.flush()
    return token


def open_invite(session: Session, token: str) -> ConsoleInvite | None:
    invite = session.scalar(
        select(ConsoleInvite)
        .where(ConsoleInvite.token_hash == _token_hash(token))
        .with_for_update()
    )
    if invite is None or invite.used_at is not None or invite.expires_at < utcnow():
        return None
    return invite


def redeem_invite(session: Session, token: str, email: str, password: str) -> ConsoleUser:
    invite = open_invite(session, token)
    if invite is None:
        raise invalid("invite_invalid", "this sign-in link is not valid any more")
    user = create_user(session, email, invite.role, password, actor="invite")
    invite.used_at = utcnow()
    session.flush()
    return user
