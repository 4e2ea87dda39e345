"""Inference-time unlearning tasks: activate new verifier rules, then calibrate the budget B.

update_verifier_rules compiles the request's forget spec into rules, calibrates λ from verifier
scores alone (no generation, so suppression is live in seconds), and activates the new
immutable version together with its certificate and audit events in one transaction.
calibrate_budget then runs real generations on probes to set B by split conformal, over the
probes that refinement actually works on.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict
from typing import Any

from celery import shared_task
from sqlalchemy.orm import Session

from models.conformal import (
    ThresholdCalibration,
    build_certificate,
    calibrate_budget,
    describe_certificate,
)
from models.generative.refinement import refine, rounds_to_acceptance
from models.generative.rules import compile_rules
from service.audit import append_event
from service.db.base import utcnow
from service.db.enums import ActionStatus, RuleSetStatus
from service.db.tables import (
    CalibrationRecord,
    ErasureRequest,
    MlModel,
    RequestAction,
    RuleSetVersion,
)
from service.erasure.certificates import issue_certificate
from service.erasure.completion import TERMINAL_ACTION, fail_action, finish_request_if_done
from service.erasure.forget_content import forget_spec
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_CALIBRATE_BUDGET, TASK_UPDATE_VERIFIER_RULES
from service.registry.config import GenerativeConfig, GenerativePolicy
from service.rules.calibration import (
    RequestEvidence,
    budget_probe_prompts,
    calibrate_threshold_for,
    evidence_key,
    request_evidence,
    retained_facts,
)
from service.rules.rulesets import (
    activate_version,
    active_row,
    merge_rule_sets,
    per_request_rule_sets,
)
from service.rules.runtime import caching_embedder, embedder, generator, verifier_for
from workers.base import DbTask, db_task_options

log = logging.getLogger(__name__)
ACTOR = "worker"
# Concurrent activations for one model: recompute on the newer base this many times.
MAX_ACTIVATION_ATTEMPTS = 5


@shared_task(name=TASK_UPDATE_VERIFIER_RULES, **db_task_options(max_retries=5))
def update_verifier_rules(self: DbTask, action_id: str) -> str:
    aid = uuid.UUID(action_id)
    settings = self.settings
    for _ in range(MAX_ACTIVATION_ATTEMPTS):
        with self.transaction() as session:
            action = session.get(RequestAction, aid, with_for_update=True)
            if action is None or action.status in TERMINAL_ACTION:
                return "terminal"
            request = session.get_one(ErasureRequest, action.request_id)
            model = session.get_one(MlModel, action.model_id)
            if request.forget_content is None:
                fail_action(session, action, request, "no_forget_content", ACTOR)
                finish_request_if_done(session, request, ACTOR)
                return "failed"
            config = GenerativeConfig.model_validate(model.config)
            policy = GenerativePolicy.model_validate(model.policy)
            spec = forget_spec(settings, request)
            current = active_row(session, model.id)
            base_version = current.version if current else None
            in_force = per_request_rule_sets(settings, current) if current else {}
            stored = dict(current.calibration.get("evidence") or {}) if current else {}
            action.status = ActionStatus.running
            model_id, request_id = model.id, request.id
        # No transaction is open from here to the activation.
        started = time.perf_counter()
        rule_sets = {**in_force, str(request_id): compile_rules(spec)}
        negatives = [f.answer for f in retained_facts(config.retain_qa_file)]
        key = evidence_key(config.embedder, negatives)
        reusable = stored.get("by_request", {}) if stored.get("key") == key else {}
        # The new request is always scored; the others' stored evidence is reused while it
        # was computed on the same retained answers with the same scoring.
        to_score = {rid for rid in rule_sets if rid not in reusable or rid == str(request_id)}
        evidence = {
            rid: (
                request_evidence(
                    rs,
                    embedder(config.embedder),
                    caching_embedder(config.embedder),
                    negatives,
                    seed=rid,
                )
                if rid in to_score
                else RequestEvidence.from_json(reusable[rid])
            )
            for rid, rs in rule_sets.items()
        }
        threshold_cal, calibration, records = calibrate_threshold_for(evidence, policy)
        calibration["evidence"] = {
            "key": key,
            "by_request": {rid: ev.to_json() for rid, ev in sorted(evidence.items())},
        }
        calibration["requests_scored"] = len(to_score)
        calibration["seconds_to_calibrate"] = round(time.perf_counter() - started, 4)
        with self.transaction() as session:
            model = session.get_one(MlModel, model_id, with_for_update=True)
            action = session.get_one(RequestAction, aid, with_for_update=True)
            if action.status in TERMINAL_ACTION:
                return "terminal"
            row = activate_version(
                session,
                settings,
                model_id=model_id,
                base_version=base_version,
                rule_sets=rule_sets,
                calibration=calibration,
                records=records,
            )
            if row is None:
                continue  # another request activated first: rebuild on the new base
            request = session.get_one(ErasureRequest, request_id, with_for_update=True)
            _record_activation(session, model, request, action, row, threshold_cal, calibration)
            enqueue_after_commit(session, settings, TASK_CALIBRATE_BUDGET, [str(row.id)])
            return "activated"
    raise RuntimeError("rule activation kept losing to concurrent activations")


def _record_activation(
    session: Session,
    model: MlModel,
    request: ErasureRequest,
    action: RequestAction,
    row: RuleSetVersion,
    threshold_cal: ThresholdCalibration,
    calibration: dict[str, Any],
) -> None:
    """The activation's audit trail, certificate and action/request completion, written in the
    activating transaction."""
    append_event(
        session,
        actor=ACTOR,
        action="rules.activated",
        target_type="model",
        target_id=str(model.id),
        request_id=request.id,
        details={
            "model": model.name,
            "version": row.version,
            "rule_count": row.rule_count,
            "requests_in_force": len(row.request_ids),
            "serving_threshold": calibration["serving_threshold"],
            "threshold_certified": calibration["threshold_certified"],
            "calibration_positives": threshold_cal.n,
            "seconds_to_calibrate": calibration["seconds_to_calibrate"],
        },
    )
    certificate: dict[str, Any] = dict(
        build_certificate(
            threshold_cal,
            None,
            false_flag_rate=calibration["false_flag_rate"],
            rule_set_version=row.version,
        )
    )
    certificate.update(
        request_id=str(request.id),
        subject_ref=request.subject_ref,
        model=model.name,
        serving_threshold=calibration["serving_threshold"],
        serving_budget=calibration["serving_budget"],
        plain_words=describe_certificate(certificate),
    )
    issue_certificate(session, action, model, certificate, ACTOR)
    action.status = ActionStatus.done
    action.finished_at = utcnow()
    action.detail = {**action.detail, "rule_set_version": row.version}
    session.flush()
    finish_request_if_done(session, request, ACTOR)


@shared_task(name=TASK_CALIBRATE_BUDGET, **db_task_options(max_retries=5))
def calibrate_budget_task(self: DbTask, rule_set_id: str) -> str:
    rid = uuid.UUID(rule_set_id)
    settings = self.settings
    with self.transaction() as session:
        row = session.get(RuleSetVersion, rid)
        if row is None or row.status != RuleSetStatus.active:
            return "superseded"
        if row.calibration.get("budget", {}).get("status") != "pending":
            return "already_calibrated"
        model = session.get_one(MlModel, row.model_id)
        config = GenerativeConfig.model_validate(model.config)
        policy = GenerativePolicy.model_validate(model.policy)
        rules = merge_rule_sets(per_request_rule_sets(settings, row))
        threshold = float(row.calibration["serving_threshold"])
        model_id, version = model.id, row.version
    started = time.perf_counter()
    generate = generator(config.model_dir).bind(max_new_tokens=config.max_new_tokens)
    verifier = verifier_for((model_id, version), rules, config.embedder)
    prompts = budget_probe_prompts(
        verifier, rules, config.retain_qa_file, threshold, policy.max_probes, seed=version
    )
    observed = [
        rounds_to_acceptance(
            refine(
                generate,
                verifier,
                prompt,
                threshold=threshold,
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
    seconds = round(time.perf_counter() - started, 4)
    with self.transaction() as session:
        row = session.get_one(RuleSetVersion, rid, with_for_update=True)
        if row.status != RuleSetStatus.active:
            return "superseded"
        budget = result.budget if result.certified and result.budget is not None else None
        row.calibration = {
            **row.calibration,
            "budget": {
                "status": "calibrated",
                **asdict(result),
                "probes_generated": len(prompts),
                "seconds": seconds,
            },
            "serving_budget": budget if budget is not None else policy.max_budget,
        }
        session.add_all(
            CalibrationRecord(
                rule_set_id=rid,
                kind="rounds_to_acceptance",
                source="probe_generation",
                value=None if r == float("inf") else r,
            )
            for r in rounds
        )
        append_event(
            session,
            actor=ACTOR,
            action="rules.budget_calibrated",
            target_type="model",
            target_id=str(model_id),
            details={
                "version": version,
                "certified": result.certified,
                "budget": result.budget,
                "alpha_b": result.alpha_b,
                "probes_generated": len(prompts),
                "probes_refined": result.n,
                "empirical_coverage": result.empirical_coverage,
                "reason": result.reason,
                "serving_budget": row.calibration["serving_budget"],
                "seconds": seconds,
            },
        )
    return "calibrated"
