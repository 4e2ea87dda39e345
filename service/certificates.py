"""Certificates: what lethe claims it did for one (request, model), written into the audit log."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy.orm import Session

from service.audit import append_event
from service.db.tables import Certificate, ErasureRequest, MlModel, RequestAction

EXACT_CLAIM = (
    "Exact unlearning: every shard that held the subject's records was retrained from the "
    "checkpoint taken before the first slice containing them, on the retained records only. "
    "The published model is the one that training on the retained data would have produced."
)


def exact_retrain_body(
    *,
    request: ErasureRequest,
    model: MlModel,
    shards: list[dict[str, Any]],
    records_erased: dict[str, int],
    version_before: int | None,
    version_after: int | None,
    note: str | None = None,
) -> dict[str, Any]:
    checks = [s.get("exactness", {}).get("status") for s in shards]
    if not shards:
        determinism = "not_applicable"
    elif all(c == "bit_exact" for c in checks):
        determinism = "bit_exact"
    elif any(c == "mismatch" for c in checks):
        determinism = "mismatch"
    else:
        determinism = "not_run"
    body: dict[str, Any] = {
        "kind": "exact_retrain",
        "request_id": str(request.id),
        "subject_ref": request.subject_ref,
        "model": model.name,
        "claim": EXACT_CLAIM,
        "version_before": version_before,
        "version_after": version_after,
        "records_erased": records_erased,
        "shards_retrained": shards,
        "determinism_check": determinism,
    }
    if note:
        body["note"] = note
    return body


def issue_certificate(
    session: Session, action: RequestAction, model: MlModel, body: dict[str, Any], actor: str
) -> Certificate:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    body_hash = hashlib.sha256(canonical.encode()).hexdigest()
    event = append_event(
        session,
        actor=actor,
        action="certificate.issued",
        target_type="model",
        target_id=str(model.id),
        request_id=action.request_id,
        details={"kind": body["kind"], "body_sha256": body_hash, "certificate": body},
    )
    certificate = Certificate(
        id=uuid.uuid4(),
        request_id=action.request_id,
        model_id=model.id,
        action_id=action.id,
        kind=body["kind"],
        body=json.loads(canonical),
        body_hash=body_hash,
        audit_seq=event.seq,
    )
    session.add(certificate)
    session.flush()
    return certificate
