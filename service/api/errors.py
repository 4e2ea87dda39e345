"""Global error rendering: stable codes, and never the offending input echoed back."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.errors import DomainError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    return body


# A location part that names a declared field or an index; anything else is the caller's own key.
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def safe_loc(err: Any) -> list[str]:
    """The error's location without the caller's own keys: an unknown field's name (extra
    fields) or a free-form key (prediction rows) could be personal data."""
    loc = [str(p) for p in err.get("loc", ())]
    if err.get("type") == "extra_forbidden" and len(loc) > 1:
        loc = loc[:-1]
    return [p if _FIELD.match(p) or p.isdigit() else "*" for p in loc]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Location and reason only: pydantic's "input" and "ctx" could quote personal data.
        details = [
            {"loc": safe_loc(err), "type": err.get("type", "invalid")} for err in exc.errors()
        ]
        return JSONResponse(
            error_body("validation_error", "the request is not valid", details), 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's "error parsing the body" (e.g. JSON that is not UTF-8): as invalid as
            # malformed JSON, which pydantic reports as 422, so one status and a stable code.
            return JSONResponse(error_body("invalid_body", "the request body cannot be read"), 422)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code
        return JSONResponse(
            error_body(code, message), exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        # A concurrent duplicate (e.g. the same idempotency key twice at once).
        log.info("integrity conflict: %s", type(exc.orig).__name__)
        return JSONResponse(error_body("conflict", "a conflicting write happened; retry"), 409)

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot store (a NUL byte in text, a number out of range): the
        # caller's input, so a 4xx, and neither the value nor the statement is echoed or logged.
        log.info("data error: %s", type(exc.orig).__name__)
        return JSONResponse(error_body("invalid_value", "a value cannot be stored"), 422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal error"), 500)
