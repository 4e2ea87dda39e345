"""The DPO console: server-rendered pages (Jinja2) under /console, signed in by session."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from service.web.render import HERE, install_handlers


def install_console(app: FastAPI) -> None:
    from service.web import (
        routes_account,
        routes_actions,
        routes_admin,
        routes_auth,
        routes_requests,
    )

    install_handlers(app)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for module in (routes_auth, routes_requests, routes_actions, routes_admin, routes_account):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    def _root() -> Response:
        # A person opening the service's address lands in the console (which signs them in).
        return RedirectResponse("/console/", status_code=307)

    @app.get("/console", include_in_schema=False)
    def _console() -> Response:
        return RedirectResponse("/console/", status_code=307)

    @app.get("/favicon.ico", include_in_schema=False)
    def _favicon() -> Response:
        return RedirectResponse("/console/static/favicon.svg", status_code=308)


__all__ = ["install_console"]
