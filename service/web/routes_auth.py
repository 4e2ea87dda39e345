"""Signing in and out, and the first admin's one-time setup link."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Cookie, Request, Response
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from service.api.deps import SessionDep, SettingsDep, audited
from service.core.errors import DomainError
from service.web.accounts import authenticate, open_invite, redeem_invite
from service.web.forms import Form, text
from service.web.render import render
from service.web.sessions import (
    COOKIE,
    PRE_CSRF_COOKIE,
    Anyone,
    CsrfRejected,
    check_csrf,
    end_session,
    set_cookie,
    start_session,
)

router = APIRouter(prefix="/console", include_in_schema=False)


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


def _signed_in(session: SessionDep, settings: SettingsDep, user_token: str) -> Response:
    response = RedirectResponse("/console/", status_code=303)
    set_cookie(response, settings, COOKIE, user_token, settings.console_session_max_hours * 3600)
    response.delete_cookie(PRE_CSRF_COOKIE, path="/console")
    return response


@router.get("/signin")
def signin_page(settings: SettingsDep) -> Response:
    return _signed_out_page("signin.html", settings)


@router.post("/signin")
def signin(
    session: SessionDep,
    settings: SettingsDep,
    form: Form,
    pre: Annotated[str | None, Cookie(alias=PRE_CSRF_COOKIE)] = None,
) -> Response:
    _check_pre_csrf(form, pre)
    user = authenticate(session, text(form, "email", 254), text(form, "password", 1000))
    if user is None:
        session.commit()
        return _signed_out_page(
            "signin.html", settings, 401, error="The e-mail address or password is not right."
        )
    token = start_session(session, settings, user)
    session.commit()
    return _signed_in(session, settings, token)


@router.post("/signout")
def signout(request: Request, session: SessionDep, principal: Anyone, form: Form) -> Response:
    check_csrf(principal.csrf_token, form)
    end_session(session, request.cookies.get(COOKIE))
    session.commit()
    response = RedirectResponse("/console/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/setup/{token}")
def setup_page(token: str, session: SessionDep, settings: SettingsDep) -> Response:
    if open_invite(session, token) is None:
        session.rollback()
        return render(
            "error.html",
            None,
            404,
            code="invite_invalid",
            message="This sign-in link is not valid any more.",
        )
    session.rollback()
    return _signed_out_page("setup.html", settings, token=token)


@router.post("/setup/{token}")
def setup(
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    form: Form,
    pre: Annotated[str | None, Cookie(alias=PRE_CSRF_COOKIE)] = None,
) -> Response:
    _check_pre_csrf(form, pre)
    audited(session)
    try:
        user = redeem_invite(session, token, text(form, "email", 254), text(form, "password", 1000))
    except DomainError as exc:
        session.rollback()
        return _signed_out_page(
            "setup.html", settings, exc.status, token=token, error=f"{exc.message}."
        )
    user_token = start_session(session, settings, user)
    session.commit()
    return _signed_in(session, settings, user_token)
