"""Calibrating the refinement budget B of an active rule-set version with real generations:
load (short transaction), generate (none open), record (one transaction)."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.conformal import BudgetCalibration, ThresholdCalibration, calibrate_budget
from models.generative.refinement import refine, rounds_to_acceptance
from models.generative.rules import RuleSet
from service.audit import append_event
from service.core.config import Settings
from service.db.enums import ActionStatus, CalibrationKind, RuleSetStatus, Strategy
from service.db.tables import (
    CalibrationRecord,
    ErasureRequest,
    MlModel,
    RequestAction,
    RuleSetVersion,
)
from service.erasure.certificates import conformal_certificate, issue_certificate
from service.registry.config import GenerativeConfig, GenerativePolicy
from service.rules.calibration import budget_probe_prompts
from service.rules.rulesets import merge_rule_sets, per_request_rule_sets
from service.rules.runtime import generator, verifier_for


@dataclass(frozen=True)
class BudgetInputs:
    rule_set_id: uuid.UUID
    model_id: uuid.UUID
    version: int
    config: GenerativeConfig
    policy: GenerativePolicy
    rules: RuleSet
    threshold: float


@dataclass(frozen=True)
class BudgetOutcome:
    result: BudgetCalibration
    rounds: list[float]
    probes_generated: int
    seconds: float


def load_budget(session: Session, settings: Settings, rule_set_id: uuid.UUID) -> BudgetInputs | str:
    """What the calibration needs, or why there is nothing to do."""
    row = session.get(RuleSetVersion, rule_set_id)
    if row is None or row.status != RuleSetStatus.active:
        return "superseded"
    if row.calibration.get("budget", {}).get("status") != "pending":
        return "already_calibrated"
    model = session.get_one(MlModel, row.model_id)
    return BudgetInputs(
        rule_set_id=row.id,
        model_id=model.id,
        version=row.version,
        config=GenerativeConfig.model_validate(model.config),
        policy=GenerativePolicy.model_validate(model.policy),
        rules=merge_rule_sets(per_request_rule_sets(settings, row)),
        threshold=float(row.calibration["serving_threshold"]),
    )


def calibrate(inputs: BudgetInputs) -> BudgetOutcome:
    """Generate answers to the probes refinement handles and set B by split conformal."""
    started = time.perf_counter()
    config, policy = inputs.config, inputs.policy
    generate = generator(config.model_dir).bind(max_new_tokens=config.max_new_tokens)
    verifier = verifier_for((inputs.model_id, inputs.version), inputs.rules, config.embedder)
    prompts = budget_probe_prompts(
        verifier,
        inputs.rules,
        config.retain_qa_file,
        inputs.threshold,
        policy.max_probes,
        seed=inputs.version,
    )
    observed = [
        rounds_to_acceptance(
            refine(
                generate,
                verifier,
                prompt,
                threshold=inputs.threshold,
                budget=policy.max_budget,
                refusal_text=config.refusal_text,
                seed=i,
            )
        )
        for i, prompt in enumerate(prompts)
    ]
    # B covers the queries refinement works on: flagged answers to questions that do not
    # name a forgotten subject (the others are accepted at once or refused at once).
    rounds = [r for r in observed if r is not None]
    result = calibrate_budget(rounds, policy.alpha_b, policy.max_budget)
    return BudgetOutcome(result, rounds, len(prompts), round(time.perf_counter() - started, 4))


def record_budget(
    session: Session, inputs: BudgetInputs, outcome: BudgetOutcome, actor: str
) -> str:
    row = session.get_one(RuleSetVersion, inputs.rule_set_id, with_for_update=True)
    if row.status != RuleSetStatus.active:
        return "superseded"
    result = outcome.result
    budget = result.budget if result.certified and result.budget is not None else None
    row.calibration = {
        **row.calibration,
        "budget": {
            "status": "calibrated",
            **asdict(result),
            "probes_generated": outcome.probes_generated,
            "seconds": outcome.seconds,
        },
        "serving_budget": budget if budget is not None else inputs.policy.max_budget,
    }
    session.add_all(
        CalibrationRecord(
            rule_set_id=row.id,
            kind=CalibrationKind.rounds_to_acceptance,
            source="probe_generation",
            value=None if r == float("inf") else r,
        )
        for r in outcome.rounds
    )
    _reissue_certificates(session, row, result, actor)
    append_event(
        session,
        actor=actor,
        action="rules.budget_calibrated",
        target_type="model",
        target_id=str(inputs.model_id),
        details={
            "version": inputs.version,
            "certified": result.certified,
            "budget": result.budget,
            "alpha_b": result.alpha_b,
            "probes_generated": outcome.probes_generated,
            "probes_refined": result.n,
            "empirical_coverage": result.empirical_coverage,
            "reason": result.reason,
            "serving_budget": row.calibration["serving_budget"],
            "seconds": outcome.seconds,
        },
    )
    return "calibrated"


def _reissue_certificates(
    session: Session, row: RuleSetVersion, budget: BudgetCalibration, actor: str
) -> None:
    """Every request in force is now protected by this version's λ and B: its certificate is
    re-issued with both, superseding the one issued at activation (both stay in the log)."""
    model = session.get_one(MlModel, row.model_id)
    threshold = ThresholdCalibration(**row.calibration["threshold"])
    for request_id in row.request_ids:
        rid = uuid.UUID(request_id)
        action = session.scalar(
            select(RequestAction).where(
                RequestAction.request_id == rid,
                RequestAction.model_id == model.id,
                RequestAction.strategy == Strategy.verifier_rules,
            )
        )
        request = session.get(ErasureRequest, rid)
        if action is None or request is None or action.status != ActionStatus.done:
            continue
        certificate = conformal_certificate(
            threshold,
            budget,
            request=request,
            model=model,
            false_flag_rate=row.calibration.get("false_flag_rate"),
            rule_set_version=row.version,
            serving_threshold=float(row.calibration["serving_threshold"]),
            serving_budget=int(row.calibration["serving_budget"]),
        )
        issue_certificate(session, action, model, certificate, actor)
