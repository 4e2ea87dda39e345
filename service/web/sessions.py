"""Console sessions: a random token in an HttpOnly, SameSite=Strict cookie (Secure outside
development), only its SHA-256 stored; a per-session CSRF token on every form; idle and
absolute timeouts; a second step while a second factor is due; role checks that mirror the
API's; the account's own session list and revocation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.deps import SessionDep
from service.core.config import Settings
from service.db.base import utcnow
from service.db.enums import Role
from service.db.tables import ConsoleSession, ConsoleUser
from service.web.accounts import user_actor

COOKIE = "lethe_session"
PRE_CSRF_COOKIE = "lethe_signin_csrf"
_TOUCH_EVERY = timedelta(seconds=60)


class SignInRequired(Exception):
    """No valid session: the console answers with the sign-in page."""


class ConsoleForbidden(Exception):
    """Signed in, but this role may not do that."""


class CsrfRejected(Exception):
    """A form arrived without this session's CSRF token."""


class SecondFactorDue(Exception):
    """The password was right; the code from the authenticator app is still to come."""


class EnrolmentRequired(Exception):
    """An admin without a second factor: nothing opens before it is set up."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ConsolePrincipal:
    user_id: uuid.UUID
    email: str
    role: Role
    csrf_token: str
    session_id: uuid.UUID | None = None
    display_name: str = ""
    # An admin who has not set up the second factor yet (only the account pages open).
    must_enrol: bool = False

    @property
    def actor(self) -> str:
        # The API's actors are "role:name"; the console's name the account, not the address.
        return user_actor(self.user_id, self.role)

    @property
    def name(self) -> str:
        return self.display_name or self.email

    def can(self, *roles: Role) -> bool:
        return self.role == Role.admin or self.role in roles


def set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/console",
    )


def start_session(
    session: Session,
    settings: Settings,
    user: ConsoleUser,
    *,
    needs_second_factor: bool = False,
    user_agent: str = "",
) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        ConsoleSession(
            id=uuid.uuid4(),
            user_id=user.id,
            token_hash=_hash(token),
            csrf_token=secrets.token_urlsafe(32),
            last_seen_at=now,
            expires_at=now + timedelta(hours=settings.console_session_max_hours),
            needs_second_factor=needs_second_factor,
            user_agent=user_agent[:200],
        )
    )
    session.flush()
    return token


def session_row(session: Session, token: str | None) -> ConsoleSession | None:
    """The session a cookie names, ended or not (for the re-auth stash and the code step)."""
    if not token:
        return None
    return session.scalar(select(ConsoleSession).where(ConsoleSession.token_hash == _hash(token)))


def open_sessions(session: Session, user_id: uuid.UUID) -> list[ConsoleSession]:
    now = utcnow()
    return list(
        session.scalars(
            select(ConsoleSession)
            .where(
                ConsoleSession.user_id == user_id,
                ConsoleSession.ended_at.is_(None),
                ConsoleSession.expires_at > now,
                ConsoleSession.needs_second_factor.is_(False),
            )
            .order_by(ConsoleSession.last_seen_at.desc())
        )
    )


def revoke_session(session: Session, user_id: uuid.UUID, session_id: uuid.UUID) -> bool:
    row = session.scalar(
        select(ConsoleSession).where(
            ConsoleSession.id == session_id,
            ConsoleSession.user_id == user_id,
            ConsoleSession.ended_at.is_(None),
        )
    )
    if row is None:
        return False
    row.ended_at = utcnow()
    session.flush()
    return True


def end_session(session: Session, token: str | None) -> None:
    if not token:
        return
    row = session.scalar(select(ConsoleSession).where(ConsoleSession.token_hash == _hash(token)))
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()
        session.flush()


def load_principal(
    session: Session, settings: Settings, token: str | None, *, touch: bool = True
) -> ConsolePrincipal:
    if not token:
        raise SignInRequired
    found = session.execute(
        select(ConsoleSession, ConsoleUser)
        .join(ConsoleUser, ConsoleUser.id == ConsoleSession.user_id)
        .where(ConsoleSession.token_hash == _hash(token), ConsoleSession.ended_at.is_(None))
    ).first()
    if found is None:
        raise SignInRequired
    row, user = found
    now = utcnow()
    idle = timedelta(minutes=settings.console_session_minutes)
    if user.disabled_at is not None or row.expires_at < now or row.last_seen_at + idle < now:
        row.ended_at = now
        session.flush()
        raise SignInRequired
    if row.needs_second_factor:
        raise SecondFactorDue
    if touch and row.last_seen_at + _TOUCH_EVERY < now:
        row.last_seen_at = now
        session.flush()
    must_enrol = user.role == Role.admin and user.totp_enabled_at is None
    return ConsolePrincipal(
        user.id,
        user.email,
        Role(user.role),
        row.csrf_token,
        session_id=row.id,
        display_name=user.display_name,
        must_enrol=must_enrol,
    )


def current(request: Request, session: SessionDep) -> ConsolePrincipal:
    settings: Settings = request.app.state.settings
    # A page following progress polls by itself: that is not the person being active.
    touch = not request.url.path.endswith("/progress")
    return load_principal(session, settings, request.cookies.get(COOKIE), touch=touch)


def check_csrf(expected: str, form: Any) -> None:
    sent = form.get("csrf_token") if form is not None else None
    if not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise CsrfRejected


def role(*roles: Role) -> Any:
    """A dependency: the signed-in principal, if its role is one of ``roles`` (or admin)."""

    def check(principal: Annotated[ConsolePrincipal, Depends(current)]) -> ConsolePrincipal:
        if principal.must_enrol:
            raise EnrolmentRequired
        if not principal.can(*roles):
            raise ConsoleForbidden
        return principal

    return Depends(check)


# Signed in, second factor set up or not: the account's own pages and signing out.
Anyone = Annotated[ConsolePrincipal, Depends(current)]
Member = Annotated[ConsolePrincipal, role(Role.dpo, Role.auditor, Role.ml_engineer)]
RequestReader = Member
AuditReader = Annotated[ConsolePrincipal, role(Role.dpo, Role.auditor)]
# Who may look a data subject up by identifier: an ML engineer could otherwise use it as an
# oracle for "did this person ask to be forgotten".
SubjectLookup = Annotated[ConsolePrincipal, role(Role.dpo)]
Admin = Annotated[ConsolePrincipal, role()]
