"""One domain error type: an HTTP status and a stable error code, never personal data."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Raised by services; rendered by the API's global handler.

    ``message`` must never contain personal data: it is returned to clients and logged.
    """

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def not_found(code: str, message: str) -> DomainError:
    return DomainError(404, code, message)


def conflict(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(409, code, message, details)


def invalid(code: str, message: str, **details: Any) -> DomainError:
    return DomainError(422, code, message, details)
