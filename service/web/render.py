"""Templates, the console's security headers and its HTML error pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from service.api.errors import error_body
from service.core.errors import DomainError
from service.reports.words import fmt_time
from service.web.sessions import ConsoleForbidden, ConsolePrincipal, CsrfRejected, SignInRequired

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


def render(
    template: str,
    principal: ConsolePrincipal | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    body = ENV.get_template(template).render(user=principal, **context)
    return HTMLResponse(body, status_code=status)


def install_handlers(app: FastAPI) -> None:
    @app.middleware("http")
    async def _console_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if request.url.path.startswith("/console"):
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @app.exception_handler(SignInRequired)
    async def _signin(request: Request, _: SignInRequired) -> Response:
        if request.method == "GET" and "progress" not in request.url.path:
            return RedirectResponse("/console/signin", status_code=303)
        return render(
            "error.html",
            None,
            401,
            code="unauthenticated",
            message="Your session has ended. Please sign in again.",
        )

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        # Replaces the API's handler: the same JSON outside the console, a page inside it.
        if not request.url.path.startswith("/console"):
            return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status)
        return render("error.html", None, exc.status, code=exc.code, message=exc.message)

    @app.exception_handler(ConsoleForbidden)
    async def _forbidden(_: Request, __: ConsoleForbidden) -> Response:
        return render(
            "error.html",
            None,
            403,
            code="forbidden",
            message="Your role may not open this page or do this.",
        )

    @app.exception_handler(CsrfRejected)
    async def _csrf(_: Request, __: CsrfRejected) -> Response:
        return render(
            "error.html",
            None,
            403,
            code="csrf_rejected",
            message="The form was refused: it did not carry this session's token. "
            "Reload the page and try again.",
        )
