"""Request-scoped dependencies: settings, the session (handlers commit), the caller's role."""

from __future__ import annotations

import types
import typing
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, params
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from service.audit.anchor import Anchor
from service.audit.chain import lock_audit_chain
from service.core.config import Settings
from service.core.errors import DomainError
from service.db.enums import Role
from service.db.session import bind_settings


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    # Anything a handler did not commit explicitly is rolled back here.
    with factory() as session:
        bind_settings(session, request.app.state.settings)
        yield session


_UNIONS = (typing.Union, types.UnionType)


def _query_fields(dependant: Dependant) -> dict[str, Any]:
    fields = {f.alias: f for f in dependant.query_params}
    for sub in dependant.dependencies:
        fields |= _query_fields(sub)
    return fields


def _takes_many(field: Any) -> bool:
    """A list-valued query parameter (``?x=1&x=2``); every other one takes a single value."""
    annotation = field.field_info.annotation
    options = typing.get_args(annotation) if typing.get_origin(annotation) in _UNIONS else ()
    return any(
        typing.get_origin(a) in (list, tuple, set, frozenset) for a in (annotation, *options)
    )


def known_query(request: Request) -> None:
    """Refuse query parameters the operation does not declare (as bodies refuse unknown
    fields): a misspelt filter must not silently widen a list or an export; and a single-valued
    one given twice. Neither the name nor the value is echoed."""
    route = request.scope.get("route")
    dependant: Dependant | None = getattr(route, "dependant", None)
    if dependant is None:
        return
    fields = _query_fields(dependant)
    given = Counter(name for name, _ in request.query_params.multi_items())
    if set(given) - set(fields):
        raise DomainError(
            422, "unknown_query_parameter", "the request names a query parameter not accepted"
        )
    # Starlette would keep the last of several values silently: ambiguous, so refused.
    if any(n > 1 and not _takes_many(fields[name]) for name, n in given.items()):
        raise DomainError(
            422, "repeated_query_parameter", "a query parameter that takes one value is repeated"
        )


def _body_params(dependant: Dependant) -> list[Any]:
    found = list(dependant.body_params)
    for sub in dependant.dependencies:
        found += _body_params(sub)
    return found


def json_body(request: Request) -> None:
    """A JSON body must say so: anything else (or nothing) is 415, not a 422 about a body
    that was never parsed. Uploads (form fields and files) are left to their own parsing."""
    route = request.scope.get("route")
    dependant: Dependant | None = getattr(route, "dependant", None)
    fields = _body_params(dependant) if dependant is not None else []
    if not fields or any(isinstance(f.field_info, params.Form) for f in fields):
        return
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise DomainError(
            415, "unsupported_media_type", "the request body must be application/json"
        )


def audited(session: Session) -> Session:
    """Called first by every handler that appends audit events (after authentication, which
    the dependencies did): the chain's lock is taken before any row lock, so all writers take
    locks in one order. Reads, predictions and generations never take it."""
    lock_audit_chain(session)
    return session


def get_anchor(request: Request) -> Anchor | None:
    anchor: Anchor | None = getattr(request.app.state, "anchor", None)
    return anchor


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
AnchorDep = Annotated[Anchor | None, Depends(get_anchor)]
SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.name}"


# Declares the scheme in OpenAPI (components.securitySchemes, each operation's "security");
# it never refuses on its own: the gate has already answered 401 without a valid token.
bearer = HTTPBearer(auto_error=False, description="an API token (`lethe token create`)")


def current_principal(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> Principal:
    """Set by the gate (service.api.gate), which authenticated the request before its body was
    read or a connection taken."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise DomainError(401, "unauthenticated", "a bearer token is required")
    return principal


@dataclass(frozen=True)
class RoleCheck:
    """The route's role check; ``allowed`` is also read by the OpenAPI document (401/403 per
    route, service.api.contract) and checked by the RBAC matrix test."""

    allowed: frozenset[Role]

    def __call__(
        self, request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        if principal.role not in self.allowed:
            raise DomainError(403, "forbidden", "this role may not do that")
        # The request's shape is checked only now, so that a caller learns nothing about an
        # operation it may not call: 401, then 403, then 415/422.
        known_query(request)
        json_body(request)
        return principal


def require(*roles: Role) -> Any:
    return Depends(RoleCheck(frozenset({*roles, Role.admin})))


# Role sets per kind of endpoint.
DpoWrite = Annotated[Principal, require(Role.dpo)]
RequestRead = Annotated[Principal, require(Role.dpo, Role.auditor, Role.ml_engineer)]
AuditRead = Annotated[Principal, require(Role.dpo, Role.auditor)]
MlWrite = Annotated[Principal, require(Role.ml_engineer)]
ModelRead = Annotated[Principal, require(Role.ml_engineer, Role.dpo, Role.auditor)]
AdminOnly = Annotated[Principal, require()]
