"""Request dependencies: the caller's role (401, 403), query parameters (unknown or repeated: 422,
not echoed), and the media type, checked after the role."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.support.api import auth
from tests.support.sample_data import CANARY_SUBJECT

BODY = {"subject_id": CANARY_SUBJECT, "reason": "Art. 17 request"}


@pytest.mark.parametrize(
    ("method", "path", "role", "status"),
    [
        ("post", "/v1/requests", None, 401),
        ("post", "/v1/requests", "bogus", 401),
        ("post", "/v1/requests", "auditor", 403),
        ("post", "/v1/requests", "ml_engineer", 403),
        ("get", "/v1/requests", None, 401),
        ("get", "/v1/audit/verify", "ml_engineer", 403),
        ("post", "/v1/models", "dpo", 403),
        ("post", "/v1/tokens", "dpo", 403),
    ],
)
def test_roles(
    app_client: TestClient,
    tokens: dict[str, str],
    method: str,
    path: str,
    role: str | None,
    status: int,
) -> None:
    headers = {} if role is None else auth(tokens.get(role, "lethe_not_a_token"))
    r = app_client.request(method, path, json=BODY, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] == ("unauthenticated" if status == 401 else "forbidden")


def test_unknown_query_parameter_is_422_and_not_echoed(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    for url in ("/v1/requests?sttus=secret-value", "/v1/audit/export?=", "/v1/models?x=1"):
        r = app_client.get(url, headers=auth(tokens["admin"]))
        assert r.status_code == 422, url
        assert r.json()["error"]["code"] == "unknown_query_parameter"
        assert "secret" not in r.text and "sttus" not in r.text


def test_a_single_valued_query_parameter_given_twice_is_422(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    h = auth(tokens["admin"])
    for url in ("/v1/requests?limit=1&limit=500", "/v1/requests?status=received&status=failed"):
        r = app_client.get(url, headers=h)
        assert r.status_code == 422, url
        assert r.json()["error"]["code"] == "repeated_query_parameter"
        assert "received" not in r.text and "500" not in r.text
    assert app_client.get("/v1/requests?limit=1&offset=0", headers=h).status_code == 200


def test_json_body_of_another_media_type_is_415_after_the_role_check(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    body = b'{"subject_id": "s-1", "reason": "r"}'
    for content_type in ("text/plain", None):
        headers = auth(tokens["dpo"])
        if content_type:
            headers["content-type"] = content_type
        r = app_client.post("/v1/requests", content=body, headers=headers)
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    # A role that may not file requests learns nothing about its input: 403 first.
    headers = {**auth(tokens["auditor"]), "content-type": "text/plain"}
    r = app_client.post("/v1/requests?bogus=1", content=body, headers=headers)
    assert r.status_code == 403
    ok = app_client.post(
        "/v1/requests",
        content=body,
        headers={**auth(tokens["dpo"]), "content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 201
