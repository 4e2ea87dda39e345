"""The OpenAPI document tells the truth about errors, from what each route depends on.

FastAPI documents a route's success and, for 422, its own ``HTTPValidationError`` shape, which
lethe never answers (service.api.errors renders every error as ``{"error": {"code", ...}}``).
The statuses the middleware and dependencies answer are invisible to it: the gate's 401 and
503 (service.api.gate), the role check's 403 (service.api.deps.RoleCheck), the body limit's 413
(service.api.limits), 404 for an unknown resource named in the path. Declaring them by hand on
every route drifts, so the document is post-processed here, once, from each route's own
dependencies; a route declares only what is its own (409 conflicts, download media types).
Schemathesis's conformance checks (tests/service/api/test_contract.py) hold it to the truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from service.api.deps import RoleCheck
from service.api.schemas import ErrorOut
from service.db.enums import Role

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}

_DESCRIPTIONS = {
    401: "no valid bearer token (missing, unknown, expired or revoked)",
    403: "the token's role may not call this operation",
    404: "the resource named in the path does not exist",
    409: "the resource's state does not allow this now",
    413: "the request body is too large",
    415: "the request body's media type is not accepted",
    422: "the request is not valid (location and reason per error; never the input)",
    503: "the service is saturated or cannot authenticate now; retry after Retry-After",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme to authenticate with",
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}},
    },
}


def error_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One documented error answer: lethe's error body, and the headers that come with it."""
    response: dict[str, Any] = {
        "description": description or _DESCRIPTIONS.get(status, "error"),
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's own error statuses (e.g. ``responses=errors(409)``), in lethe's error shape."""
    return {
        status: {"model": ErrorOut, "description": _DESCRIPTIONS[status]} for status in statuses
    }


def downloads(*media_types: str) -> dict[int | str, dict[str, Any]]:
    """The other media types a 200 may have besides JSON (report exports)."""
    schema = {"type": "string", "format": "binary"}
    return {200: {"content": {m: {"schema": schema} for m in media_types}}}


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    route: APIRoute

    @property
    def roles(self) -> frozenset[Role] | None:
        """The roles allowed to call it; None for a public operation (no token needed)."""
        return roles_of(self.route.dependant)


def roles_of(dependant: Dependant) -> frozenset[Role] | None:
    for sub in dependant.dependencies:
        if isinstance(sub.call, RoleCheck):
            return sub.call.allowed
        found = roles_of(sub)
        if found is not None:
            return found
    return None


def operations(app: FastAPI) -> Iterator[Operation]:
    """Every API operation (path × method) the app serves, with its effective path."""
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path is not None:
            for method in sorted(context.methods or ()):
                yield Operation(context.path, method, route)


def statuses_for(operation: Operation, spec: dict[str, Any]) -> set[int]:
    """The error statuses the API's shared parts can answer for this operation (``spec``: its
    generated OpenAPI operation, which lists its parameters and body)."""
    locations = {p["in"] for p in spec.get("parameters", [])}
    statuses: set[int] = set()
    if operation.roles is not None:
        statuses |= {401, 403, 503}
        if operation.method == "POST":
            # Every authenticated POST writes or checks a resource's state: a conflicting
            # state, or a concurrent duplicate write (service.api.errors), answers 409.
            statuses.add(409)
    if "path" in locations:
        statuses.add(404)
    if "requestBody" in spec:
        statuses |= {413, 422}
        if "application/json" in spec["requestBody"].get("content", {}):
            statuses.add(415)  # deps.json_body
    if locations:
        statuses.add(422)
    return statuses


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` by FastAPI's document with the errors declared truthfully."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = generate()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.update(
            ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")["$defs"]
        )
        components["ErrorOut"] = {
            k: v
            for k, v in ErrorOut.model_json_schema(
                ref_template="#/components/schemas/{model}"
            ).items()
            if k != "$defs"
        }
        for operation in operations(app):
            if not operation.route.include_in_schema:
                continue
            spec = document["paths"][operation.path][operation.method.lower()]
            responses = spec.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's HTTPValidationError, never answered
            for status in sorted(statuses_for(operation, spec)):
                declared = responses.get(str(status))
                if declared is None:
                    responses[str(status)] = error_response(status)
                elif status in _HEADERS:
                    declared.setdefault("headers", _HEADERS[status])
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
