"""The RBAC matrix: every route the app serves × every kind of caller, against the table below.

The table is the written policy; it is compared both with what each route declares (its role
dependency, service.api.deps.RoleCheck) and with what the running app answers. A route missing
from the table fails the test, so a new route cannot escape it.

Callers: no Authorization header, a malformed one, an unknown token, an expired token, a
revoked token, and a live token of each role. No valid token → 401 ``unauthenticated``; a role
the route does not allow → 403 ``forbidden``; an allowed role → anything but 401/403 (the
minimal requests here are often 404 or 422: this is about who gets in, not about inputs).
Console routes sign people in by session cookie, not by token: no bearer token, whatever its
role, opens a console page that needs a session.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from service.api.contract import operations
from service.db.base import utcnow
from service.db.enums import Role
from service.db.tables import ApiToken

DPO, ML, AUDITOR, ADMIN = Role.dpo, Role.ml_engineer, Role.auditor, Role.admin
PUBLIC = "public"  # no token needed


SESSION = "console session"  # the console's own sign-in (tests/service/web hold its role checks)


CONSOLE_OPEN = "console, no session needed"


# /metrics takes its own scraper token, never an API token (its checks are in
# tests/service/api/test_routes_metrics.py); with no scraper token configured, as here, it is
# 404 metrics_disabled to everyone.
SCRAPER = "metrics scraper token"

DPO_WRITE = frozenset({DPO, ADMIN})
REQUEST_READ = frozenset({DPO, AUDITOR, ML, ADMIN})
AUDIT_READ = frozenset({DPO, AUDITOR, ADMIN})
ML_WRITE = frozenset({ML, ADMIN})
MODEL_READ = frozenset({ML, DPO, AUDITOR, ADMIN})
ADMIN_ONLY = frozenset({ADMIN})

POLICY: dict[str, Any] = {
    # erasure requests
    "POST /v1/requests": DPO_WRITE,
    "GET /v1/requests": REQUEST_READ,
    "GET /v1/requests/{request_id}": REQUEST_READ,
    "POST /v1/requests/{request_id}/approve": DPO_WRITE,
    "POST /v1/requests/{request_id}/reject": DPO_WRITE,
    "POST /v1/requests/{request_id}/verify-identity": DPO_WRITE,
    "POST /v1/requests/{request_id}/extend": DPO_WRITE,
    "POST /v1/requests/{request_id}/cancel": DPO_WRITE,
    "GET /v1/requests/{request_id}/timeline": REQUEST_READ,
    "GET /v1/requests/{request_id}/report": AUDIT_READ,
    # models and jobs
    "POST /v1/models": ML_WRITE,
    "GET /v1/models": MODEL_READ,
    "GET /v1/models/{name}": MODEL_READ,
    "POST /v1/models/{name}/records": ML_WRITE,
    "POST /v1/models/{name}/train": ML_WRITE,
    "GET /v1/models/{name}/versions": MODEL_READ,
    "POST /v1/models/{name}/predict": ML_WRITE,
    "POST /v1/models/{name}/generate": ML_WRITE,
    "POST /v1/chat/completions": ML_WRITE,
    "GET /v1/models/{name}/rule-sets": MODEL_READ,
    "POST /v1/models/{name}/plan": ML_WRITE,
    "GET /v1/models/{name}/plan": MODEL_READ,
    "GET /v1/jobs/{job_id}": MODEL_READ,
    # audit and tokens
    "GET /v1/audit/verify": AUDIT_READ,
    "GET /v1/audit/export": AUDIT_READ,
    "GET /v1/audit/public-key": PUBLIC,
    "GET /v1/audit/checkpoint": AUDIT_READ,
    "POST /v1/tokens": ADMIN_ONLY,
    "POST /v1/tokens/{name}/revoke": ADMIN_ONLY,
    "GET /v1/tokens": ADMIN_ONLY,
    # health
    "GET /healthz": PUBLIC,
    "GET /readyz": PUBLIC,
    "GET /metrics": SCRAPER,
    # the console
    "GET /": CONSOLE_OPEN,
    "GET /console": CONSOLE_OPEN,
    "GET /console/signin": CONSOLE_OPEN,
    "POST /console/signin": CONSOLE_OPEN,
    "GET /favicon.ico": CONSOLE_OPEN,
    "GET /console/setup/{token}": CONSOLE_OPEN,
    "POST /console/setup/{token}": CONSOLE_OPEN,
    "GET /console/invite/{token}": CONSOLE_OPEN,
    "POST /console/invite/{token}": CONSOLE_OPEN,
    "GET /console/signin/code": CONSOLE_OPEN,
    "POST /console/signin/code": CONSOLE_OPEN,
    "POST /console/signout": SESSION,
    "GET /console/": SESSION,
    "POST /console/lookup": SESSION,
    "GET /console/requests/new": SESSION,
    "POST /console/requests": SESSION,
    "GET /console/requests/{request_id}": SESSION,
    "GET /console/requests/{request_id}/progress": SESSION,
    "POST /console/requests/{request_id}/approve": SESSION,
    "POST /console/requests/{request_id}/reject": SESSION,
    "POST /console/requests/{request_id}/cancel": SESSION,
    "POST /console/requests/{request_id}/verify": SESSION,
    "POST /console/requests/{request_id}/extend": SESSION,
    "GET /console/requests/{request_id}/report.{fmt}": SESSION,
    "GET /console/audit": SESSION,
    "POST /console/audit/verify": SESSION,
    "GET /console/audit/export": SESSION,
    "GET /console/models": SESSION,
    "GET /console/users": SESSION,
    "POST /console/users": SESSION,
    "POST /console/users/disable": SESSION,
    "POST /console/users/enable": SESSION,
    "GET /console/account": SESSION,
    "POST /console/account/password": SESSION,
    "GET /console/account/second-factor": SESSION,
    "POST /console/account/second-factor": SESSION,
    "POST /console/account/second-factor/remove": SESSION,
    "POST /console/account/sessions/revoke": SESSION,
}


# Path parameters of things that do not exist: an allowed caller gets 404, never data.
PATH_VALUES = {
    "request_id": str(uuid.UUID(int=0)),
    "job_id": str(uuid.UUID(int=0)),
    "name": "no-such-thing",
    "token": "no-such-token",
    "fmt": "json",
}
TOKEN_ROLES = (DPO, ML, AUDITOR, ADMIN)


@pytest.fixture
def app(app_client: TestClient) -> FastAPI:
    application: FastAPI = app_client.app  # type: ignore[assignment]
    return application


@pytest.fixture
def callers(factory: sessionmaker[Session], tokens: dict[str, str]) -> dict[str, Any]:
    """Caller name → its Authorization header (None: none sent) and its role if it is valid."""
    from service.api.tokens import create_token, revoke_tokens

    with factory() as s, s.begin():
        expired = create_token(s, "rbac-expired", "admin", "test", expires_in_days=1)
        s.execute(
            update(ApiToken)
            .where(ApiToken.name == "rbac-expired")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        revoked = create_token(s, "rbac-revoked", "admin", "test")
        revoke_tokens(s, "rbac-revoked", "test")
    invalid: dict[str, Any] = {
        "no token": (None, None),
        "not a bearer token": ("Basic YWRtaW46YWRtaW4=", None),
        "empty bearer token": ("Bearer ", None),
        "unknown token": ("Bearer lethe_" + "x" * 43, None),
        "expired admin token": (f"Bearer {expired}", None),
        "revoked admin token": (f"Bearer {revoked}", None),
    }
    valid = {f"{r.value} token": (f"Bearer {tokens[r.value]}", r) for r in TOKEN_ROLES}
    return {**invalid, **valid}


def label_of(method: str, path: str) -> str:
    return f"{method} {path}"


def test_every_route_is_in_the_policy(app: FastAPI) -> None:
    served = {label_of(op.method, op.path) for op in operations(app)}
    assert served - POLICY.keys() == set(), "routes without a line in POLICY"
    assert POLICY.keys() - served == set(), "POLICY names routes the app does not serve"


def test_declared_roles_match_the_policy(app: FastAPI) -> None:
    for op in operations(app):
        policy = POLICY[label_of(op.method, op.path)]
        declared = op.roles
        if policy in (PUBLIC, SESSION, CONSOLE_OPEN, SCRAPER):
            # Console routes check roles on the session (service.web.sessions), not a token.
            assert declared is None, f"{op.method} {op.path} declares token roles"
        else:
            assert declared == policy, f"{op.method} {op.path}: declares {declared}"


def _send(client: TestClient, method: str, path: str, header: str | None) -> Any:
    url = path.format(**PATH_VALUES)
    headers = {"authorization": header} if header is not None else {}
    if method == "GET":
        return client.get(url, headers=headers, follow_redirects=False)
    # A minimal body: an empty JSON object (valid-ish; the role check comes first).
    return client.post(url, headers=headers, json={}, follow_redirects=False)


def test_rbac_matrix(app: FastAPI, app_client: TestClient, callers: dict[str, Any]) -> None:
    violations: list[str] = []
    cells = 0
    for op in operations(app):
        label = label_of(op.method, op.path)
        policy = POLICY[label]
        for caller, (header, role) in callers.items():
            cells += 1
            r = _send(app_client, op.method, op.path, header)
            status = r.status_code
            if policy == PUBLIC:
                # /readyz answers 503 while no worker is alive (none in this test).
                ok = status not in (401, 403, 500)
                expected = "not 401/403/500"
            elif policy == SCRAPER:
                ok = status in (401, 404) and r.json()["error"]["code"] in (
                    "unauthenticated",
                    "metrics_disabled",
                )
                expected = "401 or 404 metrics_disabled (an API token never opens it)"
            elif policy == CONSOLE_OPEN:
                ok = status < 500
                expected = "no server error"
            elif policy == SESSION:
                # To the sign-in page (GET) or 401 (forms), whatever bearer token was sent.
                signin = status == 303 and r.headers["location"].startswith("/console/signin")
                ok = signin or status == 401
                expected = "sign-in redirect or 401"
            elif role is None:
                ok = status == 401 and r.json()["error"]["code"] == "unauthenticated"
                ok = ok and r.headers.get("www-authenticate") == "Bearer"
                expected = "401 unauthenticated"
            elif role not in policy:
                ok = status == 403 and r.json()["error"]["code"] == "forbidden"
                expected = "403 forbidden"
            else:
                ok = status not in (401, 403) and status < 500
                expected = "allowed (not 401/403/5xx)"
            if not ok:
                violations.append(f"{label} as {caller}: {status}, expected {expected}")
    print(f"rbac matrix: {len(list(operations(app)))} routes × {len(callers)} callers = {cells}")
    assert cells == len(POLICY) * len(callers)
    assert not violations, "\n".join(violations)
