"""The signed-in person's own account: change the password, set up (or, outside the admin
role, remove) the second factor, see where they are signed in and end those sessions."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session

from service.api.deps import SessionDep, SettingsDep, audited
from service.audit import append_event
from service.core.config import Settings
from service.core.errors import DomainError
from service.db.tables import ConsoleUser
from service.web import second_factor
from service.web.accounts import change_password
from service.web.forms import Form, raw, text
from service.web.render import render
from service.web.sessions import Anyone, ConsolePrincipal, check_csrf, open_sessions, revoke_session

router = APIRouter(prefix="/console/account", include_in_schema=False)


def _user(session: Session, principal: ConsolePrincipal) -> ConsoleUser:
    user = session.get(ConsoleUser, principal.user_id, with_for_update=True)
    assert user is not None  # the session was just loaded for it
    return user


def _page(
    session: Session, principal: ConsolePrincipal, status: int = 200, **extra: object
) -> Response:
    user = _user(session, principal)
    sessions = open_sessions(session, principal.user_id)
    session.commit()
    return render(
        "account.html",
        principal,
        status,
        account=user,
        sessions=sessions,
        has_factor=second_factor.enabled(user),
        factor_required=second_factor.required(user),
        **extra,
    )


@router.get("")
def account(session: SessionDep, principal: Anyone) -> Response:
    return _page(session, principal)


@router.post("/password")
def password(session: SessionDep, principal: Anyone, form: Form) -> Response:
    check_csrf(principal.csrf_token, form)
    audited(session)
    user = _user(session, principal)
    try:
        if raw(form, "new_password") != raw(form, "new_password_again"):
            raise DomainError(422, "passwords_differ", "the two new passwords are not the same")
        change_password(
            session,
            user,
            raw(form, "current_password")[:1001],
            raw(form, "new_password")[:1001],
            keep_session=principal.session_id,
        )
    except DomainError as exc:
        session.rollback()
        return _page(session, principal, exc.status, password_error=f"{exc.message}.")
    session.commit()
    return _page(session, principal, done="Your password was changed; your other sessions ended.")


def _enrolment_page(
    session: Session,
    settings: Settings,
    principal: ConsolePrincipal,
    status: int = 200,
    error: str | None = None,
) -> Response:
    user = _user(session, principal)
    if second_factor.enabled(user):
        session.commit()
        return RedirectResponse("/console/account", status_code=303)
    secret = second_factor.pending_secret(settings, user) or second_factor.start_enrolment(
        settings, user
    )
    session.commit()
    return render(
        "second_factor.html",
        principal,
        status,
        secret=secret,
        qr=second_factor.qr_svg(secret, principal.email),
        required=second_factor.required(user),
        error=error,
    )


@router.get("/second-factor")
def enrol(session: SessionDep, settings: SettingsDep, principal: Anyone) -> Response:
    return _enrolment_page(session, settings, principal)


@router.post("/second-factor")
def confirm(session: SessionDep, settings: SettingsDep, principal: Anyone, form: Form) -> Response:
    check_csrf(principal.csrf_token, form)
    audited(session)
    user = _user(session, principal)
    try:
        codes = second_factor.confirm_enrolment(session, settings, user, text(form, "code", 20))
    except DomainError as exc:
        session.rollback()
        return _enrolment_page(session, settings, principal, exc.status, f"{exc.message}.")
    session.commit()
    return render("recovery_codes.html", principal, codes=codes)


@router.post("/second-factor/remove")
def remove(session: SessionDep, principal: Anyone, form: Form) -> Response:
    check_csrf(principal.csrf_token, form)
    audited(session)
    try:
        second_factor.disable(session, _user(session, principal))
    except DomainError as exc:
        session.rollback()
        return _page(session, principal, exc.status, factor_error=f"{exc.message}.")
    session.commit()
    return RedirectResponse("/console/account", status_code=303)


@router.post("/sessions/revoke")
def revoke(session: SessionDep, principal: Anyone, form: Form) -> Response:
    check_csrf(principal.csrf_token, form)
    audited(session)
    try:
        target = uuid.UUID(text(form, "session_id", 40))
    except ValueError:
        return _page(session, principal, 422, sessions_error="That session is not known.")
    if revoke_session(session, principal.user_id, target):
        append_event(
            session,
            actor=principal.actor,
            action="user.session_revoked",
            target_type="user",
            target_id=str(principal.user_id),
        )
    session.commit()
    if target == principal.session_id:
        return RedirectResponse("/console/signin", status_code=303)
    return RedirectResponse("/console/account", status_code=303)
