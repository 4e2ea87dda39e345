"""The operator CLI's HTTP client: where the API is, who is calling, and what errors mean.

The API's address comes from ``--api-url`` or ``LETHE_API_URL``; the token from
``LETHE_API_TOKEN`` or a profile file (``LETHE_PROFILE``, default ``~/.config/lethe/profile.json``:
``{"url": ..., "token": ...}``), never from a command-line flag, where it would land in shell
history and process listings. Every failure maps to one exit code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# Exit codes, stable for scripts.
EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2  # typer's own code for bad arguments
EXIT_AUTH = 3  # 401 / 403
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5  # 409: invalid transition, idempotency key reused, ...
EXIT_INVALID = 6  # 400 / 413 / 422
EXIT_UNAVAILABLE = 7  # 5xx or no answer
EXIT_FAILED = 8  # --wait: the request or job ended failed
EXIT_TIMEOUT = 9  # --wait: still running when the wait ran out

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    def __init__(self, exit_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code
        self.message = message


def _exit_code_for(status: int) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if status in (400, 413, 415, 422):
        return EXIT_INVALID
    return EXIT_UNAVAILABLE if status >= 500 else EXIT_UNEXPECTED


@dataclass(frozen=True)
class Profile:
    url: str
    token: str | None


def load_profile(url: str | None = None) -> Profile:
    path = Path(os.environ.get("LETHE_PROFILE", Path.home() / ".config/lethe/profile.json"))
    stored: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ApiError(EXIT_USAGE, "bad_profile", f"cannot read the profile {path}") from exc
    return Profile(
        url=(url or os.environ.get("LETHE_API_URL") or stored.get("url") or DEFAULT_URL).rstrip(
            "/"
        ),
        token=os.environ.get("LETHE_API_TOKEN") or stored.get("token"),
    )


class ApiClient:
    def __init__(self, profile: Profile, *, timeout: float = 60.0) -> None:
        headers = {"authorization": f"Bearer {profile.token}"} if profile.token else {}
        self._http = httpx.Client(base_url=profile.url, headers=headers, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, json=json_body, params=params, headers=headers, files=files
            )
        except httpx.HTTPError as exc:
            raise ApiError(
                EXIT_UNAVAILABLE, "unreachable", f"the API did not answer ({type(exc).__name__})"
            ) from exc
        if response.status_code >= 400:
            code, message = "http_error", f"HTTP {response.status_code}"
            try:
                error = response.json().get("error", {})
                code, message = error.get("code", code), error.get("message", message)
            except ValueError:
                pass
            raise ApiError(_exit_code_for(response.status_code), code, message)
        return response

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json_body=body, **kwargs).json()

    def close(self) -> None:
        self._http.close()
