"""After activation, off the critical path, with real generations: recalibrate λ on the model's
own leaks, then calibrate the refinement budget B and the early exit at that λ. Load (short
transaction), generate (none open), record (one transaction).

1. λ: the model's plain answers to held-apart probes of the forgotten facts
   (service.rules.model_leaks) that the oracle labels as leaking are pooled with the synthetic
   leaks of activation, and Learn-then-Test runs again on the pool.
2. B and the early exit: refinement is run with the maximum budget and no exit on probes
   drawn in a seeded random order (service.rules.calibration.budget_probe_prompts, the
   held-apart probes excluded) until `policy.budget_probes` of them were handled (or
   `policy.max_budget_probes` were drawn); B by split conformal on rounds to acceptance, the exit
   threshold by training-conditional split conformal on the first-answer scores of the probes
   refinement rescued (models.conformal.early_exit).
3. The active version's calibration is updated in place (its rules do not change; a generation
   reads λ, B and the exit from one row) and every request in force gets a new certificate
   superseding the interim one (both stay in the log), stating the rule in force and the
   evidence it rests on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.conformal import (
    BudgetCalibration,
    ExitCalibration,
    ThresholdCalibration,
    calibrate_budget,
    calibrate_exit,
    exit_in_force,
    refinement_rule,
)
from models.generative.conversation import Prompt
from models.generative.refinement import (
    GenerateFn,
    RefinementResult,
    exit_calibration_point,
    refine,
    rounds_to_acceptance,
)
from models.generative.rules import RuleSet
from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.db.enums import ActionStatus, CalibrationKind, RuleSetStatus, Strategy
from service.db.tables import (
    CalibrationRecord,
    ErasureRequest,
    MlModel,
    RequestAction,
    RuleSetVersion,
)
from service.erasure.certificates import issue_certificate
from service.registry.config import GenerativeConfig, GenerativePolicy
from service.rules.calibration import (
    Record,
    RequestEvidence,
    budget_probe_prompts,
    calibrate_threshold_for,
    negative_evidence,
    retained_facts,
)
from service.rules.certify import budget_pending, final_certificate
from service.rules.finetuned_serving import finetuned_generator, served_version
from service.rules.model_leaks import ModelLeaks, held_apart_probes, model_leaks
from service.rules.rulesets import merge_rule_sets, per_request_rule_sets
from service.rules.runtime import caching_embedder, generator, verifier_for

# Kept from the activation's calibration when it is replaced (also in the audit log).
_INTERIM_KEYS = ("threshold", "serving_threshold", "false_flag_rate", "positives_source")


@dataclass(frozen=True)
class BudgetInputs:
    rule_set_id: uuid.UUID
    model_id: uuid.UUID
    version: int
    config: GenerativeConfig
    policy: GenerativePolicy
    rules: RuleSet
    per_request: dict[str, RuleSet]
    evidence: dict[str, RequestEvidence]
    served_weights: Callable[[], Any]
    """Loads the generator of the weights the model serves now: its folder for a frozen
    model, the current version's merged fine-tune for a model lethe fine-tunes (B and the
    model's own leaks must be measured on what answers users, not on the base)."""


class Abandoned(Exception):
    """The rule set stopped being served while its budget was calibrated (superseded, or
    retired once the weights no longer hold the subjects): nothing left to calibrate."""


# How often a calibration asks whether its rule set is still served: one short read, so a
# retired rule set frees its worker within seconds instead of generating for minutes.
STILL_SERVED_EVERY_S = 5.0


def abandon_when_retired(
    generate: GenerateFn, still_served: Callable[[], bool], every_s: float = STILL_SERVED_EVERY_S
) -> GenerateFn:
    """``generate``, which first raises `Abandoned` when ``still_served`` says no (asked before
    the first generation, then at most every ``every_s`` seconds, between generations)."""
    asked: float | None = None

    def checked(
        prompt: Prompt, *, banned_phrases: Sequence[str], instruction: str | None, seed: int | None
    ) -> str:
        nonlocal asked
        if asked is None or time.monotonic() - asked >= every_s:
            asked = time.monotonic()
            if not still_served():
                raise Abandoned
        return generate(prompt, banned_phrases=banned_phrases, instruction=instruction, seed=seed)

    return checked


@dataclass(frozen=True)
class BudgetOutcome:
    threshold: ThresholdCalibration
    calibration: dict[str, Any]
    records: list[Record]
    leaks: ModelLeaks
    evidence: dict[str, RequestEvidence]
    result: BudgetCalibration
    exit: ExitCalibration
    rounds: list[float]
    probes_generated: int
    seconds: float


def load_budget(
    session: Session, settings: Settings, rule_set_id: uuid.UUID
) -> BudgetInputs | Skip:
    """What the calibration needs, or why there is nothing to do."""
    row = session.get(RuleSetVersion, rule_set_id)
    if row is None:
        return Skip.superseded
    skip = _nothing_to_calibrate(row)
    if skip is not None:
        return skip
    model = session.get_one(MlModel, row.model_id)
    stored = row.calibration.get("evidence", {}).get("by_request", {})
    per_request = per_request_rule_sets(settings, row)
    config = GenerativeConfig.model_validate(model.config)
    return BudgetInputs(
        rule_set_id=row.id,
        model_id=model.id,
        version=row.version,
        config=config,
        policy=GenerativePolicy.model_validate(model.policy),
        rules=merge_rule_sets(per_request),
        per_request=per_request,
        evidence={rid: RequestEvidence.from_json(ev) for rid, ev in stored.items()},
        served_weights=_served_weights(session, settings, model, config),
    )


def still_served(session: Session, rule_set_id: uuid.UUID) -> bool:
    """Whether the rule set is still the one served (its budget still worth calibrating)."""
    row = session.get(RuleSetVersion, rule_set_id)
    return row is not None and _nothing_to_calibrate(row) is None


def _nothing_to_calibrate(row: RuleSetVersion) -> Skip | None:
    """Why this rule set's budget needs no calibration, or None when it does."""
    if row.status != RuleSetStatus.active:
        return Skip.superseded
    if not budget_pending(row):
        return Skip.already_calibrated
    return None


def _served_weights(
    session: Session, settings: Settings, model: MlModel, config: GenerativeConfig
) -> Callable[[], Any]:
    if config.finetune is None:
        return partial(generator, config.model_dir)
    # The version read here is the one B is calibrated for; a later switch (an exact retrain)
    # retires or recalibrates the rules in a new version, which gets its own calibration.
    return partial(finetuned_generator, settings, served_version(session, model))


def calibrate(
    inputs: BudgetInputs, still_served: Callable[[], bool] = lambda: True
) -> BudgetOutcome:
    """λ on the pooled leaks, then B and the exit at that λ (see the module docstring).
    Raises `Abandoned` once ``still_served`` says the rule set is no longer served."""
    started = time.perf_counter()
    config, policy = inputs.config, inputs.policy
    from models.generative.chat import Release  # imports torch, as the weights do

    verifier = verifier_for((inputs.model_id, inputs.version), inputs.rules, config.embedder)
    # Generations end as served ones do (`answer_with_rules`): one cut at the token limit
    # before a word that could begin a forgotten one.
    weights = inputs.served_weights()
    generate = abandon_when_retired(
        weights.bind(max_new_tokens=config.max_new_tokens, held_tail=Release(verifier).cut_end),
        still_served,
    )
    evidence = _with_retained_scores(inputs)
    held = held_apart_probes(inputs.rules, policy.max_probes, seed=str(inputs.version))
    leaks = model_leaks(generate, verifier, held, seed=10_000)
    threshold, calibration, records = calibrate_threshold_for(evidence, policy, leaks.scores)
    lam = float(calibration["serving_threshold"])
    prompts = budget_probe_prompts(
        verifier,
        inputs.rules,
        config.retain_qa_file,
        lam,
        policy.max_budget_probes,
        seed=inputs.version,
        exclude=set(leaks.prompts),
    )
    runs, rounds = refine_until_handled(
        prompts,
        lambda i, prompt: refine(
            generate,
            verifier,
            prompt,
            threshold=lam,
            budget=policy.max_budget,
            refusal_text=config.refusal_text,
            seed=i,
        ),
        policy.budget_probes,
    )
    return BudgetOutcome(
        threshold=threshold,
        calibration=calibration,
        records=records,
        leaks=leaks,
        evidence=evidence,
        result=calibrate_budget(rounds, policy.alpha_b, policy.max_budget),
        exit=_calibrate_exit(runs, policy),
        rounds=rounds,
        probes_generated=len(runs),
        seconds=round(time.perf_counter() - started, 4),
    )


def _with_retained_scores(inputs: BudgetInputs) -> dict[str, RequestEvidence]:
    """Each request's evidence with the retained-answer scores the activation left for later
    (the false-flag rate)."""
    config = inputs.config
    retained = retained_facts(config.retain_qa_file)
    return {
        rid: negative_evidence(
            ev,
            inputs.per_request[rid],
            caching_embedder(config.embedder),
            [f.answer for f in retained],
            [f.question for f in retained],
        )
        for rid, ev in inputs.evidence.items()
    }


def _calibrate_exit(runs: Sequence[RefinementResult], policy: GenerativePolicy) -> ExitCalibration:
    """The early exit, on the first-answer scores of the probes refinement rescued (and of
    those it did not)."""
    points = [p for p in (exit_calibration_point(run) for run in runs) if p is not None]
    return calibrate_exit(
        [s for s, rescued in points if rescued],
        [s for s, rescued in points if not rescued],
        policy.alpha_b,
        policy.delta,
    )


def refine_until_handled(
    prompts: Sequence[str],
    refine_one: Callable[[int, str], RefinementResult],
    wanted: int,
) -> tuple[list[RefinementResult], list[float]]:
    """Refine the probes in their (random) order until `wanted` of them were handled; return
    every run and the handled ones' rounds to acceptance.

    B and the exit cover the queries refinement works on: flagged answers that do not name a
    forgotten subject, to questions that do not identify one (the others are accepted at once
    or refused at once), a small share of all probes. Stopping on that count alone, never on a
    probe's rounds, leaves the handled ones a uniform sample of the handled population in a
    random order, so the split-conformal calibration on them holds.
    """
    runs: list[RefinementResult] = []
    rounds: list[float] = []
    for i, prompt in enumerate(prompts):
        if len(rounds) >= wanted:
            break
        run = refine_one(i, prompt)
        runs.append(run)
        if (r := rounds_to_acceptance(run)) is not None:
            rounds.append(r)
    return runs, rounds


def final_calibration(
    current: dict[str, Any], outcome: BudgetOutcome, policy: GenerativePolicy
) -> dict[str, Any]:
    """The version's calibration once λ, B and the exit are calibrated on generations. An
    uncertified B or exit is stored with its reason and never served."""
    result, exit_cal = outcome.result, outcome.exit
    budget = result.budget if result.certified and result.budget is not None else None
    rule, guarantee = refinement_rule(result, exit_cal)
    leaks = outcome.leaks
    return {
        **current,
        **outcome.calibration,
        "interim": {k: current.get(k) for k in _INTERIM_KEYS},
        "evidence": {
            **current.get("evidence", {}),
            "by_request": {rid: ev.to_json() for rid, ev in sorted(outcome.evidence.items())},
            "model_leaks": leaks.scores,
        },
        "model_leaks": {
            "probes_generated": leaks.generated,
            "leaking": leaks.leaking,
            "by_family": leaks.by_family,
        },
        "budget": {
            "status": "calibrated",
            **asdict(result),
            "probes_generated": outcome.probes_generated,
            "seconds": outcome.seconds,
        },
        "serving_budget": budget if budget is not None else policy.max_budget,
        "exit": asdict(exit_cal),
        "serving_exit_threshold": exit_cal.threshold if exit_in_force(exit_cal) else None,
        "refinement_rule": rule,
        "refinement_guarantee": guarantee,
    }


def record_budget(
    session: Session, inputs: BudgetInputs, outcome: BudgetOutcome, actor: str
) -> Skip | None:
    """Store the final calibration and re-issue the certificates (a Skip: another run or a
    newer rule set got there first)."""
    row = session.get_one(RuleSetVersion, inputs.rule_set_id, with_for_update=True)
    skip = _nothing_to_calibrate(row)
    if skip is not None:
        return skip
    row.calibration = final_calibration(dict(row.calibration), outcome, inputs.policy)
    session.add_all(
        CalibrationRecord(rule_set_id=row.id, kind=kind, source=source, value=value)
        for kind, source, value in outcome.records
        # The synthetic leaks were recorded at activation; the retained answers only when
        # the activation left them for later.
        if source == "model_generation"
        or (kind == "negative_score" and row.calibration["interim"]["false_flag_rate"] is None)
    )
    session.add_all(
        CalibrationRecord(
            rule_set_id=row.id,
            kind=CalibrationKind.rounds_to_acceptance,
            source="probe_generation",
            value=None if r == float("inf") else r,
        )
        for r in outcome.rounds
    )
    _audit(session, inputs, row, outcome, actor)
    reissue_certificates(session, row, actor)
    return None


def _audit(
    session: Session,
    inputs: BudgetInputs,
    row: RuleSetVersion,
    outcome: BudgetOutcome,
    actor: str,
) -> None:
    cal, result, exit_cal = row.calibration, outcome.result, outcome.exit
    append_event(
        session,
        actor=actor,
        action="rules.recalibrated",
        target_type="model",
        target_id=str(inputs.model_id),
        details={
            "version": inputs.version,
            "threshold_certified": cal["threshold_certified"],
            "serving_threshold": cal["serving_threshold"],
            "interim_serving_threshold": cal["interim"]["serving_threshold"],
            "positives_synthetic": cal["positives_synthetic"],
            "positives_model": cal["positives_model"],
            "model_leaks": cal["model_leaks"],
            "false_flag_rate": cal["false_flag_rate"],
        },
    )
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
            "serving_budget": cal["serving_budget"],
            "exit_certified": exit_cal.certified,
            "exit_threshold": exit_cal.threshold,
            "exit_rescued": exit_cal.n,
            "exit_reason": exit_cal.reason,
            "serving_exit_threshold": cal["serving_exit_threshold"],
            "refinement_rule": cal["refinement_rule"],
            "seconds": outcome.seconds,
        },
    )


def reissue_certificates(session: Session, row: RuleSetVersion, actor: str) -> None:
    """Every request in force is now protected by this version's final λ, B and exit: its
    certificate is re-issued with them, superseding the interim one (both stay in the log)."""
    model = session.get_one(MlModel, row.model_id)
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
        issue_certificate(session, action, model, final_certificate(row, model, request), actor)
