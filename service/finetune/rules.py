"""Retiring verifier rules once their subjects are gone from the weights: the next rule-set
version holds every per-request rule set in force except those requests'."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.db.tables import MlModel, RuleSetVersion
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_CALIBRATE_BUDGET
from service.registry.config import GenerativePolicy
from service.rules.calibration import RequestEvidence, calibrate_threshold_for
from service.rules.rulesets import activate_version, active_row, per_request_rule_sets


def _calibration_without(
    current: RuleSetVersion, keep: set[str], policy: GenerativePolicy
) -> tuple[dict[str, Any], list[tuple[str, str, float | None]]]:
    """λ for the remaining requests, from their stored evidence (no scoring needed)."""
    if not keep:
        # Nothing left to suppress: an empty version serves answers unscreened.
        empty = {
            "threshold_certified": False,
            "serving_threshold": policy.fallback_threshold,
            "serving_budget": 0,
            "requests_in_force": 0,
            "budget": {"status": "not_needed", "max_budget": 0},
        }
        return empty, []
    stored = current.calibration.get("evidence") or {}
    by_request = stored.get("by_request", {})
    if not all(rid in by_request for rid in keep):
        # No stored evidence to recalibrate on: keep the figures in force (calibrated on a
        # superset of the remaining leaks).
        kept = {k: v for k, v in current.calibration.items() if k != "evidence"}
        return kept, []
    evidence = {rid: RequestEvidence.from_json(by_request[rid]) for rid in keep}
    _, calibration, records = calibrate_threshold_for(evidence, policy)
    calibration["evidence"] = {
        "key": stored.get("key"),
        "by_request": {rid: by_request[rid] for rid in sorted(keep)},
    }
    return calibration, records


def retire_rules(
    session: Session, settings: Settings, model: MlModel, request_ids: set[str], actor: str
) -> RuleSetVersion | None:
    """Activate the next version without ``request_ids``' rules (the caller's transaction);
    None when none of them is in force."""
    current = active_row(session, model.id)
    if current is None or not request_ids & set(current.request_ids):
        return None
    in_force = per_request_rule_sets(settings, current)
    keep = {rid: rs for rid, rs in in_force.items() if rid not in request_ids}
    policy = GenerativePolicy.model_validate(model.policy)
    calibration, records = _calibration_without(current, set(keep), policy)
    retired = sorted(request_ids & set(in_force))
    calibration["retired_requests"] = retired
    row = activate_version(
        session,
        settings,
        model_id=model.id,
        base_version=current.version,
        rule_sets=keep,
        calibration=calibration,
        records=records,
    )
    if row is None:  # pragma: no cover - the model row lock serialises activations
        raise RuntimeError("rule-set version changed under the model lock")
    append_event(
        session,
        actor=actor,
        action="rules.retired",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "version": row.version,
            "retired_requests": retired,
            "requests_in_force": len(keep),
            "rule_count": row.rule_count,
        },
    )
    if row.calibration.get("budget", {}).get("status") == "pending":
        enqueue_after_commit(session, settings, TASK_CALIBRATE_BUDGET, [str(row.id)])
    return row
