"""Models lethe trains, in tests: the sample model (tests/support/sample_data.py) under another
name or settings, its records ingested, its subjects erased over the API."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.security import subject_ref
from service.db.tables import MlModel, TrainingRecord
from tests.support.api import auth
from tests.support.sample_data import MODEL_BODY

NAME = MODEL_BODY["name"]


def file_and_approve(
    client: TestClient, tokens: dict[str, str], subject: str, key: str | None = None
) -> str:
    h = auth(tokens["dpo"])
    if key:
        h["idempotency-key"] = key
    rid = client.post(
        "/v1/requests", json={"subject_id": subject, "reason": "art 17", "scope": [NAME]}, headers=h
    ).json()["id"]
    r = client.post(
        f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=auth(tokens["dpo"])
    )
    assert r.status_code == 200
    return str(rid)


def train_subject(session: Session, subject: str) -> list[TrainingRecord]:
    ref = subject_ref(get_settings(), subject)
    return list(
        session.scalars(
            select(TrainingRecord).where(
                TrainingRecord.subject_ref == ref, TrainingRecord.split == "train"
            )
        )
    )


def a_trained_subject(session: Session) -> str:
    for i in range(80):
        subject = f"S-{i:04d}"
        if train_subject(session, subject):
            return subject
    raise AssertionError("no subject in the train split")


def model_body(name: str, **sisa: Any) -> dict[str, Any]:
    body = copy.deepcopy(MODEL_BODY)
    body["name"] = name
    body["config"]["sisa"].update(sisa)
    return body


def register_and_ingest(
    client: TestClient, h: dict[str, str], body: dict[str, Any], data: bytes
) -> dict[str, Any]:
    r = client.post("/v1/models", json=body, headers=h)
    assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/models/{body['name']}/records",
        files={"file": ("d.csv", data, "text/csv")},
        headers=h,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def approve(client: TestClient, tokens: dict[str, str], subject: str, model: str) -> str:
    h = auth(tokens["dpo"])
    rid = client.post(
        "/v1/requests",
        json={"subject_id": subject, "reason": "art 17", "scope": [model]},
        headers=h,
    ).json()["id"]
    assert client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=h).is_success
    return str(rid)


def trained_subject_of(session: Session, model: str) -> str:
    model_id = session.scalar(select(MlModel.id).where(MlModel.name == model))
    for i in range(80):
        subject = f"S-{i:04d}"
        ref = subject_ref(get_settings(), subject)
        if session.scalar(
            select(TrainingRecord.id).where(
                TrainingRecord.model_id == model_id,
                TrainingRecord.subject_ref == ref,
                TrainingRecord.split == "train",
            )
        ):
            return subject
    raise AssertionError("no subject in the train split")
