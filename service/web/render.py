"""Templates, the console's security headers and its HTML error pages: inside /console every
refusal is a page (sign-in, a missing page or id, a forbidden action), never raw JSON."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.errors import error_body
from service.core.errors import DomainError
from service.reports.words import fmt_time
from service.web.sessions import (
    ConsoleForbidden,
    ConsolePrincipal,
    CsrfRejected,
    EnrolmentRequired,
    SecondFactorDue,
    SignInRequired,
)

HERE = Path(__file__).parent
ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["when"] = lambda v: fmt_time(v) if isinstance(v, datetime | str) else "-"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
CONSOLE = "/console"


def render(
    template: str,
    principal: ConsolePrincipal | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    body = ENV.get_template(template).render(user=principal, **context)
    return HTMLResponse(body, status_code=status)


def error_page(status: int, title: str, message: str, code: str = "") -> HTMLResponse:
    """An error in words; its stable code only in a data attribute, for machines and tests."""
    return render("error.html", None, status, title=title, message=message, code=code)


def safe_next(path: str) -> str:
    """Where to go after signing in: a console page of this site only (no open redirect)."""
    if path.startswith(CONSOLE + "/") and not path.startswith("//") and "\\" not in path:
        return path
    return CONSOLE + "/"


def signin_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{CONSOLE}/signin?next={quote(safe_next(target))}", status_code=303)


def _in_console(request: Request) -> bool:
    return request.url.path == CONSOLE or request.url.path.startswith(CONSOLE + "/")


def _headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def _console_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if _in_console(request):
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
        return response


def _session_handlers(app: FastAPI) -> None:
    @app.exception_handler(SignInRequired)
    async def _signin(request: Request, _: SignInRequired) -> Response:
        if request.method == "GET" and not request.url.path.endswith("/progress"):
            return signin_redirect(request)
        return render(
            "error.html",
            None,
            401,
            title="Signed out",
            message="Your session has ended. Please sign in again.",
        )

    @app.exception_handler(SecondFactorDue)
    async def _second(request: Request, _: SecondFactorDue) -> Response:
        return RedirectResponse(f"{CONSOLE}/signin/code", status_code=303)

    @app.exception_handler(EnrolmentRequired)
    async def _enrol(request: Request, _: EnrolmentRequired) -> Response:
        return RedirectResponse(f"{CONSOLE}/account/second-factor", status_code=303)

    @app.exception_handler(ConsoleForbidden)
    async def _forbidden(_: Request, __: ConsoleForbidden) -> Response:
        return error_page(
            403, "Not allowed", "Your role may not open this page or do this.", "forbidden"
        )

    @app.exception_handler(CsrfRejected)
    async def _csrf(_: Request, __: CsrfRejected) -> Response:
        return error_page(
            403,
            "Form refused",
            "The form was refused: it did not carry this session's token. "
            "Reload the page and try again.",
            "csrf_rejected",
        )


Handler = Callable[[Request, Any], Response | Awaitable[Response]]


async def _delegate(handler: Handler, request: Request, exc: Exception) -> Response:
    """Outside the console, the API's own handler answers (its JSON error body)."""
    result = handler(request, exc)
    return await result if inspect.isawaitable(result) else result


def install_handlers(app: FastAPI) -> None:
    _headers(app)
    _session_handlers(app)
    api_validation = app.exception_handlers.get(RequestValidationError)
    api_http = app.exception_handlers.get(StarletteHTTPException)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        # Replaces the API's handler: the same JSON outside the console, a page inside it.
        if not _in_console(request):
            return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status)
        title = "Not found" if exc.status == 404 else "Not possible"
        message = exc.message[:1].upper() + exc.message[1:] + "."
        return error_page(exc.status, title, message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if not _in_console(request) and api_validation is not None:
            return await _delegate(api_validation, request, exc)
        # In the console a malformed id or page is a page that does not exist.
        return error_page(404, "Not found", "There is no such page or request.", "not_found")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not _in_console(request) and api_http is not None:
            return await _delegate(api_http, request, exc)
        if exc.status_code == 404:
            return error_page(404, "Not found", "There is no such page or request.", "not_found")
        return error_page(exc.status_code, "Not possible", "This cannot be done here.", "http")
