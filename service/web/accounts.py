"""Console accounts: argon2 password hashes, roles as the API's, single-use invite links with
which people set their own password, password changes, enabling and disabling.

These functions flush and never commit; the CLI (``lethe user …``) and the console's handlers
own the transaction. Audit events name accounts by id, never by e-mail address.
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
from service.db.tables import ConsoleInvite, ConsoleSession, ConsoleUser

_HASHER = PasswordHasher()
# Verified against when the e-mail is unknown, so both cases take the same time.
_DUMMY_HASH = _HASHER.hash("not-a-password-" + secrets.token_hex(8))
MIN_PASSWORD_LENGTH = 12
INVITE_HOURS = 72
FIRST_ADMIN_HOURS = 24


def normalise_email(email: str) -> str:
    return email.strip().casefold()


def user_actor(user_id: uuid.UUID, role: Role | str) -> str:
    """How events name a console account: its role and the first 8 hex digits of its id."""
    return f"{Role(role).value}:user-{str(user_id)[:8]}"


def _check_email(email: str) -> str:
    clean = normalise_email(email)
    if "@" not in clean or len(clean) > 254 or len(clean) < 3:
        raise invalid("invalid_email", "the e-mail address is not valid")
    return clean


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH or len(password) > 1000:
        raise invalid("weak_password", f"passwords need at least {MIN_PASSWORD_LENGTH} characters")


def _check_name(name: str) -> str:
    clean = " ".join(name.split())
    if not 1 <= len(clean) <= 100:
        raise invalid("invalid_name", "give a name of 1 to 100 characters")
    return clean


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise invalid(
            "unknown_role", "the role is not one of dpo, ml_engineer, auditor, admin"
        ) from None


def _refuse_taken(session: Session, email: str) -> None:
    if session.scalar(select(ConsoleUser.id).where(ConsoleUser.email == email)) is not None:
        raise conflict("user_exists", "an account with this e-mail address exists")


def create_user(
    session: Session,
    email: str,
    role: str,
    password: str,
    actor: str,
    display_name: str = "",
) -> ConsoleUser:
    clean = _check_email(email)
    check_password(password)
    role_value = _role(role)
    _refuse_taken(session, clean)
    user = ConsoleUser(
        id=uuid.uuid4(),
        email=clean,
        display_name=_check_name(display_name or clean.split("@")[0]),
        role=role_value,
        password_hash=_HASHER.hash(password),
        created_by=actor,
        password_changed_at=utcnow(),
        recovery_code_hashes=[],
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


def find_user(session: Session, email: str) -> ConsoleUser:
    user = session.scalar(
        select(ConsoleUser).where(ConsoleUser.email == normalise_email(email)).with_for_update()
    )
    if user is None:
        raise invalid("unknown_user", "no account with this e-mail address")
    return user


def active_admins(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(ConsoleUser)
            .where(ConsoleUser.role == Role.admin, ConsoleUser.disabled_at.is_(None))
        )
        or 0
    )


def disable_user(session: Session, email: str, actor: str) -> ConsoleUser:
    """Disable an account and end its sessions; never the last active admin (nobody could
    manage accounts any more)."""
    user = find_user(session, email)
    if user.disabled_at is not None:
        return user
    if user.role == Role.admin and active_admins(session) <= 1:
        raise conflict(
            "last_admin", "this is the only active admin account: enable or invite another first"
        )
    now = utcnow()
    user.disabled_at = now
    for row in session.scalars(
        select(ConsoleSession).where(
            ConsoleSession.user_id == user.id, ConsoleSession.ended_at.is_(None)
        )
    ):
        row.ended_at = now
    session.flush()
    append_event(
        session, actor=actor, action="user.disabled", target_type="user", target_id=str(user.id)
    )
    return user


def enable_user(session: Session, email: str, actor: str) -> ConsoleUser:
    user = find_user(session, email)
    if user.disabled_at is None:
        return user
    user.disabled_at = None
    session.flush()
    append_event(
        session, actor=actor, action="user.enabled", target_type="user", target_id=str(user.id)
    )
    return user


def authenticate(session: Session, email: str, password: str) -> ConsoleUser | None:
    """The account, when the password is right and it is active; the same work either way."""
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


def password_matches(user: ConsoleUser, password: str) -> bool:
    try:
        return _HASHER.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def change_password(
    session: Session, user: ConsoleUser, current: str, new: str, keep_session: uuid.UUID | None
) -> None:
    """Change the password (the current one first); every other session of the account ends."""
    if not password_matches(user, current):
        raise invalid("wrong_password", "the current password is not right")
    check_password(new)
    if new == current:
        raise invalid("same_password", "choose a password different from the current one")
    now = utcnow()
    user.password_hash = _HASHER.hash(new)
    user.password_changed_at = now
    for row in session.scalars(
        select(ConsoleSession).where(
            ConsoleSession.user_id == user.id, ConsoleSession.ended_at.is_(None)
        )
    ):
        if row.id != keep_session:
            row.ended_at = now
    session.flush()
    append_event(
        session,
        actor=user_actor(user.id, user.role),
        action="user.password_changed",
        target_type="user",
        target_id=str(user.id),
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_invite(
    session: Session,
    *,
    role: Role,
    hours: int,
    actor: str,
    email: str | None = None,
    display_name: str = "",
    first_admin: bool = False,
) -> tuple[ConsoleInvite, str]:
    token = secrets.token_urlsafe(24)
    invite = ConsoleInvite(
        id=uuid.uuid4(),
        token_hash=_token_hash(token),
        role=role,
        expires_at=utcnow() + timedelta(hours=hours),
        email=email,
        display_name=display_name,
        created_by=actor,
        first_admin=first_admin,
    )
    session.add(invite)
    session.flush()
    return invite, token


def invite_user(
    session: Session, email: str, role: str, display_name: str, actor: str
) -> tuple[str, ConsoleInvite]:
    """A single-use link (valid INVITE_HOURS) with which the person sets their own password:
    nobody else ever knows it. Returns the token, to be shown once."""
    clean = _check_email(email)
    _refuse_taken(session, clean)
    role_value = _role(role)
    invite, token = _new_invite(
        session,
        role=role_value,
        hours=INVITE_HOURS,
        actor=actor,
        email=clean,
        display_name=_check_name(display_name),
    )
    append_event(
        session,
        actor=actor,
        action="user.invited",
        target_type="invite",
        target_id=str(invite.id),
        details={"role": role_value.value, "expires_at": invite.expires_at.isoformat()},
    )
    return token, invite


def _live_first_admin_invite(session: Session) -> ConsoleInvite | None:
    return session.scalar(
        select(ConsoleInvite).where(
            ConsoleInvite.first_admin.is_(True),
            ConsoleInvite.used_at.is_(None),
            ConsoleInvite.expires_at > utcnow(),
        )
    )


def first_admin_invite(session: Session, *, replace: bool = False) -> str | None:
    """A one-time token for the first admin; None once an active admin exists, or while an
    earlier link is still live (it was printed once; ``replace`` voids it for a new one)."""
    if active_admins(session):
        return None
    live = _live_first_admin_invite(session)
    if live is not None:
        if not replace:
            return None
        live.expires_at = utcnow()
    _, token = _new_invite(
        session, role=Role.admin, hours=FIRST_ADMIN_HOURS, actor="setup", first_admin=True
    )
    return token


def open_invite(session: Session, token: str) -> ConsoleInvite | None:
    invite = session.scalar(
        select(ConsoleInvite)
        .where(ConsoleInvite.token_hash == _token_hash(token))
        .with_for_update()
    )
    if invite is None or invite.used_at is not None or invite.expires_at < utcnow():
        return None
    if invite.first_admin and active_admins(session):
        return None  # the first admin exists: this link is dead
    return invite


def redeem_invite(
    session: Session, token: str, email: str, display_name: str, password: str
) -> ConsoleUser:
    """Create the invited account with the password its owner chose; the link dies."""
    invite = open_invite(session, token)
    if invite is None:
        raise invalid("invite_invalid", "this link is not valid any more")
    address = invite.email or email
    user = create_user(
        session,
        address,
        invite.role,
        password,
        actor=f"invite:{str(invite.id)[:8]}",
        display_name=display_name or invite.display_name,
    )
    invite.used_at = utcnow()
    session.flush()
    return user
