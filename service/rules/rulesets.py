"""Rule-set versions of a generative model: read the active one, build and activate the next."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.conformal import ExitCalibration, exit_in_force
from models.generative.rules import RuleSet
from models.generative.rules import merge_rule_sets as merge_in_order
from service.core.config import Settings
from service.core.keys import KeyDestroyed, is_sealed, keys_for, request_key_id
from service.core.security import decrypt, encrypt, open_sealed, seal_for
from service.db.base import utcnow
from service.db.enums import RuleSetStatus
from service.db.tables import CalibrationRecord, RuleSetVersion
from service.rules.runtime import LoadedCache


@dataclass(frozen=True)
class ActiveRules:
    """One consistent read of the active version: its rules, λ and B come from one row."""

    version: int
    rule_set_id: uuid.UUID
    rules: RuleSet
    threshold: float
    budget: int
    calibration: dict[str, Any]
    # The certified early-exit threshold, or None (no exit): the budget task stores one only
    # when models.conformal.exit_in_force says the calibration certifies it.
    exit_threshold: float | None = None


# A rule set version stored per request: each request's rules sealed under its own data key,
# so destroying one request's key leaves no readable name or fact of it in any version.
_PER_REQUEST = b"LRS1"


def per_request_rule_sets(
    settings: Settings, row: RuleSetVersion, *, skip_destroyed: bool = False
) -> dict[str, RuleSet]:
    """Each request's rules, opened into memory. ``KeyDestroyed`` when a request's key is gone
    (``skip_destroyed``: leave that request out, for versions no longer served)."""
    blob = bytes(row.rules_encrypted)
    if not blob.startswith(_PER_REQUEST):
        data = json.loads(decrypt(settings, blob))
        return {request_id: RuleSet.from_json(text) for request_id, text in data.items()}
    sealed: dict[str, str] = json.loads(blob[len(_PER_REQUEST) :])
    opened: dict[str, RuleSet] = {}
    for request_id, text in sealed.items():
        try:
            plain = open_sealed(settings, base64.b64decode(text))
        except KeyDestroyed:
            if skip_destroyed:
                continue
            raise
        opened[request_id] = RuleSet.from_json(plain.decode())
    return opened


def seal_rule_sets(settings: Settings, rule_sets: dict[str, RuleSet]) -> bytes:
    """Each request's rules under its own key (the service key for requests filed before
    per-request keys)."""
    keys = keys_for(settings)
    sealed = {}
    for request_id, rs in sorted(rule_sets.items()):
        key_id = request_key_id(request_id)
        blob = seal_for(settings, key_id if keys.exists(key_id) else None, rs.to_json().encode())
        sealed[request_id] = base64.b64encode(blob).decode()
    return _PER_REQUEST + json.dumps(sealed, sort_keys=True).encode()


def reseal_request_rules(settings: Settings, row: RuleSetVersion, request_id: str) -> bool:
    """Seal ``request_id``'s rules in ``row`` under the request's data key (which must exist),
    where they are still under the service key: a version written before per-request keys (one
    service-key blob; its other requests' rules stay under the service key, each on its own)
    or a per-request entry sealed without a key. The rules themselves do not change; every other
    entry's bytes are kept as they are. Whether the row changed."""
    blob = bytes(row.rules_encrypted)
    if blob.startswith(_PER_REQUEST):
        sealed: dict[str, str] = json.loads(blob[len(_PER_REQUEST) :])
        if request_id not in sealed:
            return False
        entry = base64.b64decode(sealed[request_id])
        if is_sealed(entry):
            return False
        plain = decrypt(settings, entry)
    else:
        old: dict[str, str] = json.loads(decrypt(settings, blob))
        if request_id not in old:
            return False
        sealed = {rid: _b64(encrypt(settings, text.encode())) for rid, text in old.items()}
        plain = old[request_id].encode()
    sealed[request_id] = _b64(seal_for(settings, request_key_id(request_id), plain))
    row.rules_encrypted = _PER_REQUEST + json.dumps(sealed, sort_keys=True).encode()
    return True


def reseal_rules_of_request(session: Session, settings: Settings, request_id: str) -> int:
    """``reseal_request_rules`` in every version (of every model) that holds the request's
    rules, superseded ones included; flushes. How many versions changed."""
    rows = session.scalars(
        select(RuleSetVersion)
        .where(RuleSetVersion.request_ids.contains([request_id]))
        .order_by(RuleSetVersion.model_id, RuleSetVersion.version)
        .with_for_update()
    )
    changed = sum(reseal_request_rules(settings, row, request_id) for row in rows)
    session.flush()
    return changed


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def merge_rule_sets(rule_sets: dict[str, RuleSet]) -> RuleSet:
    """One rule set for the verifier; rule ids stay positional (prefixed by request order)."""
    return merge_in_order([rs for _, rs in sorted(rule_sets.items())])


def active_row(session: Session, model_id: uuid.UUID) -> RuleSetVersion | None:
    return session.scalar(
        select(RuleSetVersion).where(
            RuleSetVersion.model_id == model_id, RuleSetVersion.status == RuleSetStatus.active
        )
    )


_MERGED = LoadedCache(capacity=32)


def load_active(settings: Settings, session: Session, model_id: uuid.UUID) -> ActiveRules | None:
    """One row read: version, rules and calibration can never come from different versions."""
    row = active_row(session, model_id)
    if row is None:
        return None
    return ActiveRules(
        version=row.version,
        rule_set_id=row.id,
        # Versions are immutable: decrypting once per version is enough.
        rules=_MERGED.get(row.id, lambda: merge_rule_sets(per_request_rule_sets(settings, row))),
        threshold=float(row.calibration["serving_threshold"]),
        budget=int(row.calibration["serving_budget"]),
        calibration=dict(row.calibration),
        exit_threshold=_exit_threshold(row.calibration),
    )


def _exit_threshold(calibration: dict[str, Any]) -> float | None:
    """Served only when the stored exit calibration certifies it (never an uncertified exit)."""
    tau = calibration.get("serving_exit_threshold")
    stored = calibration.get("exit")
    if tau is None or not stored:
        return None
    exit_cal = ExitCalibration(**stored)
    return float(tau) if exit_in_force(exit_cal) and exit_cal.threshold == tau else None


def activate_version(
    session: Session,
    settings: Settings,
    *,
    model_id: uuid.UUID,
    base_version: int | None,
    rule_sets: dict[str, RuleSet],
    calibration: dict[str, Any],
    records: list[tuple[str, str, float | None]],
) -> RuleSetVersion | None:
    """Supersede the active version and insert the next one, in the caller's transaction.

    Returns None when another activation got there first (the caller recomputes on the new
    base): the partial unique index allows one active version per model.
    """
    current = active_row(session, model_id)
    if (current.version if current else None) != base_version:
        return None
    now = utcnow()
    if current is not None:
        session.execute(
            update(RuleSetVersion)
            .where(RuleSetVersion.id == current.id)
            .values(status=RuleSetStatus.superseded, superseded_at=now)
        )
        session.flush()
    row = RuleSetVersion(
        id=uuid.uuid4(),
        model_id=model_id,
        version=(base_version or 0) + 1,
        status=RuleSetStatus.active,
        rules_encrypted=seal_rule_sets(settings, rule_sets),
        rule_count=sum(len(rs.rules) for rs in rule_sets.values()),
        request_ids=sorted(rule_sets),
        calibration=calibration,
        activated_at=now,
    )
    session.add(row)
    session.flush()
    session.add_all(
        CalibrationRecord(rule_set_id=row.id, kind=kind, source=source, value=value)
        for kind, source, value in records
    )
    session.flush()
    return row
