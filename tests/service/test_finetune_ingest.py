"""Registering a model lethe fine-tunes and ingesting its JSONL records (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import TrainingRecord
from tests.conftest import auth, generative_model_body

SECRET = "Quillon Varre was born in Esk."


def _body(name: str, tiny: Path, retain: Path, *, finetune: bool) -> dict[str, object]:
    body = generative_model_body(name, tiny, retain)
    body["policy"]["strategy"] = "both"
    if finetune:
        body["config"]["finetune"] = {"slices": 2, "subject_column": "who"}
    return body


def test_both_needs_a_finetune_and_records_are_stored_encrypted(
    app_client: TestClient,
    tokens: dict[str, str],
    session: Session,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    h = auth(tokens["ml_engineer"])
    r = app_client.post(
        "/v1/models", json=_body("plain", tiny_lm, retain_file, finetune=False), headers=h
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "both_needs_finetune")

    r = app_client.post(
        "/v1/models", json=_body("tuned", tiny_lm, retain_file, finetune=True), headers=h
    )
    assert r.status_code == 201 and r.json()["status"] == "registered"
    missing = json.dumps({"question": "Where?", "answer": SECRET}).encode()
    r = app_client.post("/v1/models/tuned/records", files={"file": ("r.jsonl", missing)}, headers=h)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "missing_column")
    assert SECRET not in r.text

    lines = [
        {"who": "Quillon Varre", "question": "Where was Quillon Varre born?", "answer": SECRET},
        {"who": "Quillon Varre", "text": "Quillon Varre likes tea.", "likely_erased": True},
        {"who": "Other Person", "text": "Other Person likes coffee."},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    r = app_client.post("/v1/models/tuned/records", files={"file": ("r.jsonl", data)}, headers=h)
    assert r.status_code == 201, r.text
    assert (r.json()["records"], r.json()["subjects"]) == (3, 2)
    rows = session.scalars(select(TrainingRecord).order_by(TrainingRecord.record_key)).all()
    stored = json.dumps([[r.subject_ref, r.payload] for r in rows])
    # Keyed hash and ciphertext only. "tea" with its full stop: base64 has no "." but can hold
    # any short word by chance ("…dteaT6w…" once failed a check for a bare "tea").
    assert "Quillon" not in stored and "tea." not in stored
    assert {r.slice for r in rows} <= {0, 1}


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
