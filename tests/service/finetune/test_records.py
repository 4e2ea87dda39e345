"""Records of a model lethe fine-tunes: policy both needs a fine-tune, and JSONL records are stored
as keyed hashes and ciphertext."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import TrainingRecord
from tests.support.api import auth
from tests.support.generative_data import generative_model_body

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
