"""Schemathesis against the live app on the suite's real PostgreSQL: every operation of the
OpenAPI document, called with a valid token of each role allowed to call it, every built-in
check enabled. Zero failures is the contract: no 500, every status and media type and body
as documented, invalid input refused and valid input accepted.

Bounded and reproducible: derandomized, a fixed number of examples per operation, no example
database. Celery tasks the handlers send after commit are captured (conftest's sent_tasks), so
nothing heavy runs.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from service.api.contract import operations
from service.db.enums import Role

load_all_checks()


# Every check schemathesis has, by name, so a check it adds later is not silently skipped.
ALL_CHECKS = [CHECKS.get_one(name) for name in CHECKS.get_all_names()]


# The upload's file part is bytes, sent as CSV or JSON lines (encoding in the document).
schemathesis.serializer.alias("text/csv", "application/octet-stream")
schemathesis.serializer.alias("application/jsonl", "application/octet-stream")
EXAMPLES_PER_OPERATION = 15  # per operation and mode (valid, invalid input)


# The roles tried, in turn, on each operation they may call (admin may call every one).
ROLES = (Role.admin, Role.dpo, Role.ml_engineer, Role.auditor)


# Bodies whose validity depends on the server's state, which no schema can say: a model's
# model_dir must be a model on this server's disk, and cross-field rules hold (placement tail
# below the slice count); a request's scope must name registered models. Schema-valid input
# there may be answered 422 with its own code (asserted below), never 5xx.
SERVER_STATE_422 = {
    "POST /v1/models": {"model_dir_not_found", "both_needs_finetune"},
    "POST /v1/requests": {"unknown_model"},
}


def _states_server_rule(label: str, error: dict[str, Any]) -> bool:
    """Whether a 422 to schema-valid input is one of the rules the schema cannot state: a
    server-state code, or validation errors raised only by cross-field rules (value_error)."""
    if error["code"] == "validation_error":
        return label == "POST /v1/models" and all(
            d["type"] == "value_error" for d in error["details"]
        )
    return error["code"] in SERVER_STATE_422[label]


NEGATIVE_REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429"]
CONFIG = SchemathesisConfig.from_dict(
    {
        # Schemathesis's list of statuses that refuse invalid input, plus 413: a body over the
        # size limit (e.g. more rows than allowed) is refused before it is read; and less its
        # 5xx (any 5xx fails not_a_server_error anyway).
        "checks": {"negative_data_rejection": {"expected-statuses": [*NEGATIVE_REFUSALS, "413"]}},
        "operations": [
            {
                # Not ready (no worker in this test) is a documented answer, not a server error.
                "include-path": "/readyz",
                "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "4xx", "503"]}},
            },
            *(
                {
                    "include-method": label.split()[0],
                    "include-path": label.split()[1],
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "401", "403", "404", "409", "422"]
                        }
                    },
                }
                for label in SERVER_STATE_422
            ),
        ],
    }
)


# No shrinking: every distinct failure is collected and reported, not minimised one by one.
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def api_app(app_client: TestClient) -> FastAPI:
    app: FastAPI = app_client.app  # type: ignore[assignment]
    return app


def _distinct(group: FailureGroup) -> set[str]:
    return {
        f"{type(f).__name__}: {f.title} ({f.message.splitlines()[0]})" for f in group.exceptions
    }


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    turn: Iterator[dict[str, str]],
    examples: Counter[str],
    failures: dict[str, set[str]],
) -> None:
    label = operation.label

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @SETTINGS
    def run(case: Any) -> None:
        examples[label] += 1
        try:
            response = case.call_and_validate(headers=next(turn), checks=ALL_CHECKS)
            refused = response.status_code == 422 and mode == GenerationMode.POSITIVE
            if refused and label in SERVER_STATE_422:
                error = response.json()["error"]
                if not _states_server_rule(label, error):
                    failures.setdefault(label, set()).add(f"schema-valid input refused: {error}")
        except FailureGroup as group:
            found = failures.setdefault(label, set())
            for failure in _distinct(group) - found:
                found.add(failure)
                # The first occurrence in full: the response and a curl line to reproduce it.
                print(f"--- {label}: {failure}\n{str(group)[:2500]}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to make invalid: an operation with no parameters and no body.
        assert mode == GenerationMode.NEGATIVE, label


def test_api_contract(api_app: FastAPI, tokens: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app, config=CONFIG)
    allowed = {
        f"{op.method} {op.path}": op.roles
        for op in operations(api_app)
        if op.route.include_in_schema
    }
    failures: dict[str, set[str]] = {}
    examples: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        roles = allowed[label]
        # Spelled as the security scheme names it: the ignored-auth check takes it off (and
        # puts a wrong one on) to see the operation answer 401.
        turn = itertools.cycle(
            [
                {"Authorization": f"Bearer {tokens[r.value]}"}
                for r in ROLES
                if roles is None or r in roles
            ]
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, turn, examples, failures)
    summary = {
        "operations": len(examples),
        "examples": sum(examples.values()),
        "checks": len(ALL_CHECKS),
        "failures": sum(len(f) for f in failures.values()),
    }
    print("schemathesis:", summary)
    assert len(examples) == len(allowed)
    report = "\n".join(f"{label}: {'; '.join(sorted(f))}" for label, f in sorted(failures.items()))
    assert not failures, f"{summary}\n{report}"


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
