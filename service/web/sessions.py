"""Console sessions: a random token in an HttpOnly, SameSite=Strict cookie (Secure outside
development), only its SHA-256 stored; a per-session CSRF token on every form; idle and
absolute timeouts; role checks that mirror the API's."""

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

COOKIE = "lethe_session"
PRE_CSRF_COOKIE = "lethe_signin_csrf"
_TOUCH_EVERY = timedelta(seconds=60)


class SignInRequired(Exception):
    """No valid session: the console answers with the sign-in page."""


class ConsoleForbidden(Exception):
    """Signed in, but this role may not do that."""


class CsrfRejected(Exception):
    """A form arrived without this session's CSRF token."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ConsolePrincipal:
    user_id: uuid.UUID
    email: str
    role: Role
    csrf_token: str

    @property
    def actor(self) -> str:
        # The API's actors are "role:name"; the console's name the account, not the address.
        return f"{self.role.value}:user-{str(self.user_id)[:8]}"

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


def start_session(session: Session, settings: Settings, user: ConsoleUser) -> str:
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
        )
    )
    session.flush()
    return token


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
    if touch and row.last_seen_at + _TOUCH_EVERY < now:
        row.last_seen_at = now
        session.flush()
    return ConsolePrincipal(user.id, user.email, Role(user.role), row.csrf_token)


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
        if not principal.can(*roles):
            raise ConsoleForbidden
        return principal

    return Depends(check)


Anyone = Annotated[ConsolePrincipal, Depends(current)]
RequestReader = Annotated[ConsolePrincipal, role(Role.dpo, Role.auditor, Role.ml_engineer)]
AuditReader = Annotated[ConsolePrincipal, role(Role.dpo, Role.auditor)]
Admin = Annotated[ConsolePrincipal, role()]
