"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: database, broker, at
least one live worker, and no recorded tampering of the audit log), both without authentication."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.queue.presence import readiness

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])
_CACHE_S = 1.0
_lock = threading.Lock()
_last: tuple[float, dict[str, Any]] = (0.0, {})


@router.get("/healthz")
async def health() -> dict[str, str]:
    """Liveness only: answered on the event loop, never waits for the database or a thread."""
    return {"status": "ok"}


def _audit_check(request: Request) -> dict[str, Any]:
    """Not ready while a checkpoint signer has recorded tampering of the audit log: the trail
    can no longer be trusted to prove anything (docs/THREAT_MODEL.md)."""
    anchor = getattr(request.app.state, "anchor", None)
    if anchor is None:
        return {}
    try:
        tampers = anchor.tamper_records()
    except Exception as exc:  # an unreadable checkpoint store: not ready either
        log.warning("audit checkpoint store not readable: %s", type(exc).__name__)
        return {"audit_intact": False, "ready": False}
    intact = not tampers
    return {"audit_intact": intact, **({} if intact else {"ready": False})}


@router.get("/readyz", responses={503: {"description": "not ready: see the failing checks"}})
def ready(request: Request) -> JSONResponse:
    """Database reachable, broker reachable, a worker alive. Probed at most once a second: a
    flood of probes costs one connection, not one each."""
    global _last
    with _lock:
        at, checks = _last
        if time.monotonic() - at > _CACHE_S:
            checks = readiness(request.app.state.settings, request.app.state.session_factory)
            checks.update(_audit_check(request))
            _last = (time.monotonic(), checks)
    return JSONResponse(checks, status_code=200 if checks["ready"] else 503)
