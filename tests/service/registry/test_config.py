"""A model's configuration and policy, validated at registration: bounded settings (422, not
echoed), fields only the server fills refused, the library's converging defaults, a budget draw
the policy can afford."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from models.sisa import (
    DEFAULT_SLICES,
    SisaConfig,
)
from service.registry.config import GenerativePolicy
from tests.support.api import auth
from tests.support.exact import model_body
from tests.support.generative_data import generative_model_body
from tests.support.sample_data import MODEL_BODY


@pytest.mark.parametrize(
    "sisa", [{"hidden": [-5]}, {"hidden": [10**9]}, {"hidden": []}, {"seed": 2**70}]
)
def test_model_config_out_of_bounds_is_422(
    app_client: TestClient, tokens: dict[str, str], sisa: dict[str, Any]
) -> None:
    r = app_client.post(
        "/v1/models", json=model_body("contract-model", **sisa), headers=auth(tokens["ml_engineer"])
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert str(next(iter(sisa.values()))) not in r.text


def test_over_long_model_dir_is_422(app_client: TestClient, tokens: dict[str, str]) -> None:
    body = {"name": "gen", "kind": "generative", "config": {"model_dir": "/x/" + "a" * 600}}
    r = app_client.post("/v1/models", json=body, headers=auth(tokens["ml_engineer"]))
    assert r.status_code == 422, r.text
    assert "a" * 600 not in r.text


def test_server_filled_config_fields_are_refused_at_registration(
    app_client: TestClient, tokens: dict[str, str]
) -> None:

    h = auth(tokens["ml_engineer"])
    for name, value in (("feature_spec", {"columns": "forged"}), ("sisa_plan", {"s": 1})):
        body = {**MODEL_BODY, "config": {**MODEL_BODY["config"], name: value}}
        r = app_client.post("/v1/models", json=body, headers=h)
        assert r.status_code == 422, name
        assert "forged" not in r.text
    schema = app_client.get("/openapi.json").json()["components"]["schemas"]["ModelConfigIn"]
    assert "feature_spec" not in schema["properties"] and "sisa" in schema["properties"]
    assert app_client.post("/v1/models", json=MODEL_BODY, headers=h).status_code == 201


@pytest.mark.parametrize(
    "sisa",
    [
        {"hidden": [0]},
        {"hidden": [5000]},
        {"seed": 2**32},
        {"seed": -1},
        {"validation_fraction": 0.5},
        {"aggregation": "median"},
        {"learning_rate": 0},
    ],
)
def test_sisa_settings_are_bounded(
    app_client: TestClient, tokens: dict[str, str], sisa: dict[str, Any]
) -> None:
    r = app_client.post(
        "/v1/models", json=model_body("bad", **sisa), headers=auth(tokens["ml_engineer"])
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


def test_registry_defaults_are_the_librarys_converging_ones(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    body = {"name": "defaults", "config": {"subject_column": "c", "label_column": "y"}}
    r = app_client.post("/v1/models", json=body, headers=auth(tokens["ml_engineer"]))
    sisa = r.json()["config"]["sisa"]
    library = SisaConfig(shards=1, slices=1, input_dim=1, num_classes=2)
    for name in ("learning_rate", "batch_size", "validation_fraction", "patience", "max_rounds"):
        assert sisa[name] == getattr(library, name), name
    assert sisa["hidden"] == list(library.hidden)
    assert (sisa["shards"], sisa["slices"]) == (None, DEFAULT_SLICES)


def test_a_policy_wanting_more_budget_probes_than_it_may_draw_is_422(
    app_client: TestClient, tokens: dict[str, str], tiny_lm: Path, retain_file: Path
) -> None:
    body = generative_model_body("greedy", tiny_lm, retain_file)
    body["policy"].update(budget_probes=50, max_budget_probes=20)
    r = app_client.post("/v1/models", json=body, headers=auth(tokens["ml_engineer"]))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error")
    assert (
        app_client.get("/v1/models/greedy", headers=auth(tokens["ml_engineer"])).status_code == 404
    )


def test_policy_rejects_wanting_more_handled_probes_than_it_may_draw() -> None:
    default = GenerativePolicy()
    assert default.budget_probes <= default.max_budget_probes
    with pytest.raises(ValidationError, match="budget_probes"):
        GenerativePolicy(budget_probes=50, max_budget_probes=40)
