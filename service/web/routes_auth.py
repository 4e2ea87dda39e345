"""Signing in (throttled, with a second step for the authenticator code) and out, and the
single-use links with which people create their account and choose their own password.

Every attempt is in the audit log: ``signin.succeeded``, ``signin.failed`` and
``signin.locked`` name the account by its keyed hash (or id once known) and the client address
by its keyed hash; never a password, an e-mail address or an IP address."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Cookie, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from service.api.deps import SessionDep, SettingsDep, audited
from service.audit import append_event
from service.core.errors import DomainError
from service.db.tables import ConsoleUser
from service.reports.words import fmt_time
from service.web import second_factor, throttle
from service.web.accounts import authenticate, open_invite, redeem_invite, user_actor
from service.web.forms import Form, raw, text
from service.web.render import render, safe_next
from service.web.sessions import (
    COOKIE,
    PRE_CSRF_COOKIE,
    Anyone,
    CsrfRejected,
    check_csrf,
    end_session,
    session_row,
    set_cookie,
    start_session,
)

router = APIRouter(prefix="/console", include_in_schema=False)
NextParam = Annotated[str, Query(alias="next", max_length=500)]


def _signed_out_page(
    template: str, settings: SettingsDep, status: int = 200, **context: object
) -> Response:
    """Forms shown before a session exists carry a token tied to a short-lived cookie."""
    token = secrets.token_urlsafe(24)
    response = render(template, None, status, csrf_token=token, **context)
    set_cookie(response, settings, PRE_CSRF_COOKIE, token, max_age=3600)
    return response


def _check_pre_csrf(form: FormData, cookie: str | None) -> None:
    sent = form.get("csrf_token")
    if not cookie or not isinstance(sent, str) or not hmac.compare_digest(sent, cookie):
        raise CsrfRejected


def _with_session(settings: SettingsDep, token: str, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, settings, COOKIE, token, settings.console_session_max_hours * 3600)
    response.delete_cookie(PRE_CSRF_COOKIE, path="/console")
    return response


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/signin")
def signin_page(settings: SettingsDep, next_: NextParam = "/console/") -> Response:
    return _signed_out_page("signin.html", settings, next=safe_next(next_))


def _refused(settings: SettingsDep, status: int, message: str, target: str) -> Response:
    return _signed_out_page("signin.html", settings, status, error=message, next=target)


def _audit_signin(
    session: SessionDep, action: str, keys: throttle.Keys, user: ConsoleUser | None
) -> None:
    append_event(
        session,
        actor=user_actor(user.id, user.role) if user is not None else "anonymous",
        action=action,
        target_type="user" if user is not None else "account",
        target_id=str(user.id) if user is not None else keys.account,
        details={"account": keys.account, "address": keys.address},
    )


@router.post("/signin")
def signin(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    form: Form,
    pre: Annotated[str | None, Cookie(alias=PRE_CSRF_COOKIE)] = None,
) -> Response:
    _check_pre_csrf(form, pre)
    email, target = text(form, "email", 254), safe_next(text(form, "next", 500))
    keys = throttle.Keys.of(email, _address(request))
    until = throttle.locked_until(session, keys)
    if until is not None:
        # Refused before any password work; not logged again (the lockout was).
        session.rollback()
        return _refused(settings, 429, _locked_words(until), target)
    # The password is checked before the audit chain's lock is taken: argon2's work must not
    # hold up every other writer of the log.
    user = authenticate(session, email, raw(form, "password")[:1000])
    audited(session)
    if user is None:
        locked = throttle.record_failure(session, keys)
        _audit_signin(session, "signin.failed", keys, None)
        if locked is not None:
            _audit_signin(session, "signin.locked", keys, None)
        session.commit()
        message = (
            _locked_words(locked) if locked else "The e-mail address or password is not right."
        )
        return _refused(settings, 429 if locked else 401, message, target)
    throttle.record_success(session, keys)
    needs_code = second_factor.enabled(user)
    agent = request.headers.get("user-agent", "")
    token = start_session(session, settings, user, needs_second_factor=needs_code, user_agent=agent)
    if not needs_code:
        _audit_signin(session, "signin.succeeded", keys, user)
    session.commit()
    second = f"/console/signin/code?next={quote(target)}"
    return _with_session(settings, token, second if needs_code else target)


def _locked_words(until: datetime) -> str:
    return (
        "Too many failed sign-ins: signing in is paused for this account or this network "
        f"until {fmt_time(until)}. Wait, or ask an admin."
    )


@router.get("/signin/code")
def code_page(
    request: Request, session: SessionDep, settings: SettingsDep, next_: NextParam = "/console/"
) -> Response:
    row = session_row(session, request.cookies.get(COOKIE))
    session.rollback()
    if row is None or not row.needs_second_factor or row.ended_at is not None:
        return RedirectResponse("/console/signin", status_code=303)
    return _signed_out_page("code.html", settings, next=safe_next(next_))


@router.post("/signin/code")
def code(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    form: Form,
    pre: Annotated[str | None, Cookie(alias=PRE_CSRF_COOKIE)] = None,
) -> Response:
    """The second step: a code from the app, or a recovery code. Failures count towards the
    same lockout as passwords."""
    _check_pre_csrf(form, pre)
    audited(session)
    target = safe_next(text(form, "next", 500))
    row = session_row(session, request.cookies.get(COOKIE))
    if row is None or not row.needs_second_factor or row.ended_at is not None:
        session.rollback()
        return RedirectResponse("/console/signin", status_code=303)
    user = session.get(ConsoleUser, row.user_id, with_for_update=True)
    assert user is not None
    keys = throttle.Keys.of(user.email, _address(request))
    until = throttle.locked_until(session, keys)
    if until is None and second_factor.check(session, settings, user, text(form, "code", 40)):
        row.needs_second_factor = False
        throttle.record_success(session, keys)
        _audit_signin(session, "signin.succeeded", keys, user)
        session.commit()
        return RedirectResponse(target, status_code=303)
    locked = until or throttle.record_failure(session, keys)
    if until is None:
        _audit_signin(session, "signin.failed", keys, user)
    if locked is not None:
        end_session(session, request.cookies.get(COOKIE))
    session.commit()
    message = _locked_words(locked) if locked else "The code is not right. Try the next one."
    status = 429 if locked else 401
    return _signed_out_page("code.html", settings, status, error=message, next=target)


@router.post("/signout")
def signout(request: Request, session: SessionDep, principal: Anyone, form: Form) -> Response:
    check_csrf(principal.csrf_token, form)
    end_session(session, request.cookies.get(COOKIE))
    session.commit()
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


def _invalid_link() -> Response:
    return render(
        "error.html",
        None,
        404,
        title="Link not valid",
        message="This link is not valid any more: it was used, it expired, or an admin "
        "already exists. Ask an admin for a new invitation.",
    )


@router.get("/invite/{token}")
def invite_page(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    invite = open_invite(session, token[:100])
    if invite is None:
        session.rollback()
        return _invalid_link()
    email, name = invite.email, invite.display_name
    session.rollback()
    return _signed_out_page("invite.html", settings, token=token, email=email, name=name)


@router.post("/invite/{token}")
def redeem(
    token: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    form: Form,
    pre: Annotated[str | None, Cookie(alias=PRE_CSRF_COOKIE)] = None,
) -> Response:
    _check_pre_csrf(form, pre)
    audited(session)
    invite = open_invite(session, token[:100])
    if invite is None:
        session.rollback()
        return _invalid_link()
    email, name = invite.email, invite.display_name
    password, again = raw(form, "password")[:1001], raw(form, "password_again")[:1001]
    try:
        if password != again:
            raise DomainError(422, "passwords_differ", "the two passwords are not the same")
        user = redeem_invite(
            session, token[:100], text(form, "email", 254), text(form, "name", 100), password
        )
    except DomainError as exc:
        session.rollback()
        return _signed_out_page(
            "invite.html", settings, 422, token=token, email=email, name=name, error=exc.message
        )
    agent = request.headers.get("user-agent", "")
    user_token = start_session(session, settings, user, user_agent=agent)
    session.commit()
    # Admins set up their second factor before anything else opens.
    target = "/console/account/second-factor" if second_factor.required(user) else "/console/"
    return _with_session(settings, user_token, target)


# The first admin's link, as printed by `lethe serve` before this name existed.
router.add_api_route("/setup/{token}", invite_page, methods=["GET"])
router.add_api_route("/setup/{token}", redeem, methods=["POST"])
