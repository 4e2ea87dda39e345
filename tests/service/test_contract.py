"""Inputs the schemathesis run turned into 500s get a 4xx with a stable code, and the answer
never quotes them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SentTasks, auth
from tests.sample_data import MODEL_BODY, synthetic_csv


def _model(**sisa: Any) -> dict[str, Any]:
    body = copy.deepcopy(MODEL_BODY)
    body["name"] = "contract-model"
    body["config"]["sisa"].update(sisa)
    return body


@pytest.mark.parametrize(
    "sisa", [{"hidden": [-5]}, {"hidden": [10**9]}, {"hidden": []}, {"seed": 2**70}]
)
def test_model_config_out_of_bounds_is_422(
    app_client: TestClient, tokens: dict[str, str], sisa: dict[str, Any]
) -> None:
    r = app_client.post("/v1/models", json=_model(**sisa), headers=auth(tokens["ml_engineer"]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert str(next(iter(sisa.values()))) not in r.text


def test_over_long_model_dir_is_422(app_client: TestClient, tokens: dict[str, str]) -> None:
    body = {"name": "gen", "kind": "generative", "config": {"model_dir": "/x/" + "a" * 600}}
    r = app_client.post("/v1/models", json=body, headers=auth(tokens["ml_engineer"]))
    assert r.status_code == 422, r.text
    assert "a" * 600 not in r.text


def test_nul_bytes_in_text_are_422_and_not_echoed(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    r = app_client.post(
        "/v1/requests",
        json={"subject_id": "nul-subject", "reason": "secret\x00reason"},
        headers=auth(tokens["dpo"]),
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_value"
    assert "secret" not in r.text
    r = app_client.post(
        "/v1/tokens", json={"name": "a\x00b", "role": "dpo"}, headers=auth(tokens["admin"])
    )
    assert r.status_code == 422


def test_offset_beyond_bigint_is_422(app_client: TestClient, tokens: dict[str, str]) -> None:
    r = app_client.get("/v1/requests", params={"offset": 2**63}, headers=auth(tokens["dpo"]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_duplicate_csv_header_is_422(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    h = auth(tokens["ml_engineer"])
    assert app_client.post("/v1/models", json=_model(), headers=h).status_code == 201
    lines = synthetic_csv(n_subjects=5).decode().splitlines()
    lines[0] += ",age"
    lines[1:] = [line + ",1" for line in lines[1:]]
    r = app_client.post(
        "/v1/models/contract-model/records",
        files={"file": ("d.csv", "\n".join(lines).encode(), "text/csv")},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_column"


def test_body_that_cannot_be_read_is_422(app_client: TestClient, tokens: dict[str, str]) -> None:
    # JSON that is not UTF-8: FastAPI's own 400 "error parsing the body" before.
    r = app_client.post(
        "/v1/requests",
        content=b'"\xff"',
        headers={**auth(tokens["dpo"]), "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_body"


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


def test_server_filled_config_fields_are_refused_at_registration(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    from tests.sample_data import MODEL_BODY

    h = auth(tokens["ml_engineer"])
    for name, value in (("feature_spec", {"columns": "forged"}), ("sisa_plan", {"s": 1})):
        body = {**MODEL_BODY, "config": {**MODEL_BODY["config"], name: value}}
        r = app_client.post("/v1/models", json=body, headers=h)
        assert r.status_code == 422, name
        assert "forged" not in r.text
    schema = app_client.get("/openapi.json").json()["components"]["schemas"]["ModelConfigIn"]
    assert "feature_spec" not in schema["properties"] and "sisa" in schema["properties"]
    assert app_client.post("/v1/models", json=MODEL_BODY, headers=h).status_code == 201


def test_export_bounds_are_iso_8601(app_client: TestClient, tokens: dict[str, str]) -> None:
    h = auth(tokens["auditor"])
    assert app_client.get("/v1/audit/export?since=0.0", headers=h).status_code == 422
    ok = app_client.get("/v1/audit/export?since=2026-01-01T00:00:00Z", headers=h)
    assert ok.status_code == 200


def test_scope_and_unknown_fields_are_not_echoed(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    body = {"subject_id": "s-1", "reason": "r", "scope": ["Jane Doe <jane@x.test>"]}
    r = app_client.post("/v1/requests", json=body, headers=auth(tokens["dpo"]))
    assert r.status_code == 422 and "Jane" not in r.text
    body = {"subject_id": "s-1", "reason": "r", "jane@x.test": 1}
    r = app_client.post("/v1/requests", json=body, headers=auth(tokens["dpo"]))
    assert r.status_code == 422 and "jane" not in r.text
    assert r.json()["error"]["details"] == [{"loc": ["body"], "type": "extra_forbidden"}]


def test_openapi_documents_lethes_errors(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    error = {"$ref": "#/components/schemas/ErrorOut"}
    for path, methods in doc["paths"].items():
        for method, spec in methods.items():
            responses = spec["responses"]
            public = "security" not in spec
            expected = set() if public else {"401", "403", "503"}
            if any(p["in"] == "path" for p in spec.get("parameters", [])):
                expected |= {"404", "422"}
            if "requestBody" in spec:
                expected |= {"413", "422"}
                if "application/json" in spec["requestBody"]["content"]:
                    expected.add("415")
            assert expected <= responses.keys(), f"{method} {path}"
            for status in expected:
                assert responses[status]["content"]["application/json"]["schema"] == error
    report = doc["paths"]["/v1/requests/{request_id}/report"]["get"]["responses"]["200"]
    assert {"application/json", "text/csv", "application/pdf"} <= report["content"].keys()


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
