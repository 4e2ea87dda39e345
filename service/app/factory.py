"""The FastAPI application factory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request, Response

from service.api.contract import install_openapi
from service.api.errors import install_error_handlers
from service.api.gate import Gate, TokenCache
from service.api.limits import BodySizeLimit
from service.api.routes_audit import router as audit_router
from service.api.routes_chat import router as chat_router
from service.api.routes_health import router as health_router
from service.api.routes_metrics import install_metrics
from service.api.routes_models import router as models_router
from service.api.routes_plan import router as plan_router
from service.api.routes_requests import router as requests_router
from service.audit.anchor import Anchor, anchored
from service.core.config import Settings, get_settings
from service.core.observability import correlation_id
from service.core.storage import check_stores
from service.db.privileges import refuse_in_production
from service.db.session import database_url, session_factory
from service.finetune.hosts import HostLoop
from service.web import install_console


def _host_lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """This API host registers, heartbeats and deletes its copies of erased weights while it
    runs (service.finetune.hosts)."""
    host = HostLoop(settings, "api")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        host.start()
        try:
            yield
        finally:
            host.stop()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="lethe",
        version="0.1.0",
        description="Right-to-be-forgotten requests against machine-learning models, with proof.",
        lifespan=_host_lifespan(settings),
    )
    app.state.settings = settings
    check_stores(settings)  # a versioned bucket that keeps "deleted" versions: refused
    # Sessions checkpoint the audit chain after every commit that appended events.
    app.state.anchor = Anchor.from_settings(settings)
    app.state.session_factory = anchored(session_factory(database_url(settings)), app.state.anchor)
    refuse_in_production(settings.environment, app.state.session_factory)
    install_error_handlers(app)
    app.include_router(requests_router)
    app.include_router(models_router)
    app.include_router(chat_router)
    app.include_router(plan_router)
    app.include_router(audit_router)
    app.include_router(health_router)
    install_console(app)
    install_openapi(app)

    @app.middleware("http")
    async def _correlation(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        incoming = request.headers.get("x-request-id", "")
        value = incoming if 0 < len(incoming) <= 64 and incoming.isascii() else uuid.uuid4().hex
        token = correlation_id.set(value)
        try:
            response = await call_next(request)
        finally:
            correlation_id.reset(token)
        response.headers["x-request-id"] = value
        return response

    # Inside the size limit, outside everything else: a request is authenticated and admitted
    # before its body is read or a database connection is taken.
    # Shared with the token routes: a revocation clears it (other API processes: within seconds).
    app.state.token_cache = TokenCache()
    app.add_middleware(
        Gate,
        factory_of=lambda: app.state.session_factory,
        cache=app.state.token_cache,
        max_inflight=settings.api_max_inflight,
        max_queued=settings.api_max_queued,
        queue_timeout_s=settings.api_queue_timeout_seconds,
    )
    app.add_middleware(
        BodySizeLimit,
        default_limit=settings.max_request_body_bytes,
        upload_limit=settings.max_upload_bytes,
    )
    install_metrics(app)  # last: its response counter is the outermost middleware
    return app
