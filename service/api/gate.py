"""The API's front door: authenticate before anything else, then admit a bounded number of
requests to the database, and answer 503 with Retry-After when that many are already in.

Why here, as ASGI middleware: FastAPI reads and parses the body and runs the session dependency
before the route's role check, so an unauthenticated or flooding client used to cost a pool
connection (and the audit chain's lock) and a full body read. Here a request without a valid
token is answered 401 from its headers alone, and at most ``max_inflight`` requests (fewer than
the pool's connections) hold a worker thread and a connection at a time: the rest wait, bounded
in number and time, and are then told to come back; nothing waits on a lock held by a request
that cannot get a thread.

Token lookups are cached for a few seconds (positive and negative) so that a flood of the same
bad token costs no database round trip; a revocation therefore takes effect within
``TOKEN_CACHE_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import Principal
from service.api.errors import error_body
from service.core.security import hash_token
from service.db.base import utcnow
from service.db.enums import Role
from service.db.tables import ApiToken

log = logging.getLogger(__name__)

TOKEN_CACHE_S = 5.0
_CACHE_SIZE = 4096
# Paths anyone may call: liveness, readiness, the API description, the audit public key;
# /metrics checks its own scraper token (service/api/routes_metrics.py), not an API token.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/v1/audit/public-key",
        "/metrics",
        # A person opening the service's address, and a browser's icon request: both lead to
        # the console, which signs people in itself.
        "/",
        "/favicon.ico",
    }
)


# The DPO console's pages and forms (service/web), which authenticate by session cookie.
CONSOLE_PREFIX = "/console"
# The console's door: signing in, the second-factor step, invitation links and static files.
# Anyone may knock, so these run in their own few slots, never in the API's: a flood of
# sign-ins (each an argon2 hash) waits or is refused there and cannot starve the API.
DOOR_PREFIXES = ("/console/signin", "/console/invite/", "/console/setup/", "/console/static/")
DOOR_SLOTS = 2
DOOR_QUEUE = 64
DOOR_TIMEOUT_S = 10.0
_BUSY_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Busy</title>"
    b"<p>Too many sign-in attempts at once. Wait a moment and try again.</p></html>"
)

# A refused request's body is drained up to this size so that its client, still sending, reads
# the answer instead of a reset connection; a larger body is never read (the connection closes).
_DRAIN_LIMIT = 64 * 1024


async def _drain(scope: Scope, receive: Receive) -> bool:
    """Read and drop a small request body; False when it is too large to bother."""
    declared = dict(scope.get("headers") or []).get(b"content-length", b"")
    if not declared.isdigit() or int(declared) > _DRAIN_LIMIT:
        return False
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if seen > _DRAIN_LIMIT:
            return False
        if not message.get("more_body", False):
            return True


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> None:
    extra = dict(headers or {})
    if scope.get("method") not in ("GET", "HEAD") and not await _drain(scope, receive):
        extra["connection"] = "close"
    await send_error(send, status, code, message, extra)


async def send_error(
    send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(error_body(code, message)).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class TokenCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def clear(self) -> None:
        self._entries.clear()

    def put(self, key: str, principal: Principal | None) -> None:
        self._entries[key] = (time.monotonic() + TOKEN_CACHE_S, principal)
        self._entries.move_to_end(key)
        while len(self._entries) > _CACHE_SIZE:
            self._entries.popitem(last=False)


def lookup_token(factory: sessionmaker[Session], token_hash: str) -> Principal | None:
    with factory() as session:
        row = session.execute(
            select(ApiToken.name, ApiToken.role, ApiToken.revoked_at, ApiToken.expires_at).where(
                ApiToken.token_hash == token_hash
            )
        ).first()
    now = utcnow()
    if row is None or (row.revoked_at is not None and row.revoked_at <= now):
        return None
    if row.expires_at is not None and row.expires_at <= now:
        return None
    return Principal(row.name, Role(row.role))


class Gate:
    """Authenticate from headers, then admit at most ``max_inflight`` requests at once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        factory_of: Callable[[], sessionmaker[Session]],
        cache: TokenCache,
        max_inflight: int,
        max_queued: int,
        queue_timeout_s: float,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.factory_of = factory_of
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.retry_after = {"retry-after": str(retry_after_s)}
        self._slots = asyncio.Semaphore(max_inflight)
        self._queued = 0
        self._door = asyncio.Semaphore(DOOR_SLOTS)
        self._door_queued = 0
        self._cache = cache
        # Token lookups get their own few threads: they never wait behind handlers.
        self._auth_threads = anyio.CapacityLimiter(4)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        if path.startswith(DOOR_PREFIXES):
            await self._admit_at_door(scope, receive, send)
            return
        if path.startswith(CONSOLE_PREFIX):
            # The console signs people in with its own session cookies and CSRF tokens
            # (service/web/sessions.py); it still waits for a slot like any other request.
            await self._admit(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        principal, refusal = await self._authenticate(headers.get(b"authorization", b""))
        if principal is None:
            status, code, message, extra = refusal
            await refuse(scope, receive, send, status, code, message, extra)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self._admit(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request once one of the bounded slots is free; 503 when saturated."""
        if self._queued >= self.max_queued:
            await send_error(
                send, 503, "overloaded", "too many requests queued; retry later", self.retry_after
            )
            return
        self._queued += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except TimeoutError:
            await send_error(
                send, 503, "overloaded", "the service is saturated; retry later", self.retry_after
            )
            return
        finally:
            self._queued -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()

    async def _admit_at_door(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The console's door in its own bounded lane: 429 when too many knock at once."""
        if self._door_queued >= DOOR_QUEUE:
            await _send_busy(send)
            return
        self._door_queued += 1
        try:
            await asyncio.wait_for(self._door.acquire(), DOOR_TIMEOUT_S)
        except TimeoutError:
            await _send_busy(send)
            return
        finally:
            self._door_queued -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._door.release()

    async def _authenticate(
        self, header: bytes
    ) -> tuple[Principal | None, tuple[int, str, str, dict[str, str]]]:
        """The principal, or why not: (status, code, message, headers) of the refusal."""
        challenge = {"www-authenticate": "Bearer"}
        text = header.decode("latin-1")
        if not text.lower().startswith("bearer ") or not text[7:].strip():
            return None, (401, "unauthenticated", "a bearer token is required", challenge)
        key = hash_token(text[7:].strip())
        cached, principal = self._cache.get(key)
        if not cached:
            try:
                principal = await anyio.to_thread.run_sync(
                    lookup_token, self.factory_of(), key, limiter=self._auth_threads
                )
            except (PoolTimeout, DBAPIError) as exc:
                log.warning("token lookup unavailable: %s", type(exc).__name__)
                busy = "authentication is unavailable; retry"
                return None, (503, "unavailable", busy, self.retry_after)
            self._cache.put(key, principal)
        if principal is None:
            return None, (401, "unauthenticated", "the token is not valid", challenge)
        return principal, (200, "", "", {})


async def _send_busy(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(_BUSY_PAGE)).encode()),
                (b"retry-after", b"5"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY_PAGE})
