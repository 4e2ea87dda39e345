"""Activating a request's verifier rules: load (short transaction), calibrate (none open),
activate (one transaction: the moment of suppression), then certify (service.rules.certify,
a transaction of its own right after).

``calibrate_activation`` is the one implementation of "the k-th request's rules go live": the
worker's task and bench/guard.py both call it. It compiles the new request's rules, scores its
leaks and the retained answers under them, pools that with the stored evidence of the requests
already in force, and calibrates λ by Learn-then-Test; no generation, so suppression is live
within seconds. B is calibrated afterwards (service.rules.budget).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.conformal import ThresholdCalibration
from models.generative.embedder import Embedder, PrefetchedEmbedder
from models.generative.rules import Fact, ForgetSpec, RuleSet, compile_rules
from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.db.enums import TERMINAL_ACTION_STATUSES, ActionStatus, Strategy
from service.db.tables import ErasureRequest, MlModel, RequestAction, RuleSetVersion
from service.erasure.forget_content import forget_spec
from service.erasure.lifecycle import (
    fail_action,
    finish_request_if_done,
    move_action,
    start_actions,
)
from service.registry.config import GenerativeConfig, GenerativePolicy
from service.rules.calibration import (
    MAX_POSITIVES_PER_REQUEST,
    LeakDraw,
    Record,
    RequestEvidence,
    calibrate_threshold_for,
    evidence_key,
    positives_per_request,
    prefetch_evidence,
    request_evidence,
    retained_facts,
)
from service.rules.rulesets import activate_version, active_row, per_request_rule_sets
from service.rules.runtime import caching_embedder, embedder, one_embedding_thread

# At most this many other requests' rules go live with the one a task was sent for.
MAX_BATCH = 50
# The action's detail key naming the version that put its rules in force (certificate pending).
IN_FORCE = "rules_in_force"


@dataclass(frozen=True)
class Companion:
    """Another request waiting for its rules on the same model, activated in the same run."""

    action_id: uuid.UUID
    request_id: uuid.UUID
    spec: ForgetSpec


@dataclass(frozen=True)
class ActivationInputs:
    action_id: uuid.UUID
    request_id: uuid.UUID
    model_id: uuid.UUID
    config: GenerativeConfig
    policy: GenerativePolicy
    spec: ForgetSpec
    base_version: int | None
    in_force: dict[str, RuleSet]
    stored_evidence: dict[str, Any]
    companions: tuple[Companion, ...] = ()


@dataclass(frozen=True)
class ActivationOutcome:
    """A calibrated rule set ready to activate."""

    rule_sets: dict[str, RuleSet]
    threshold: ThresholdCalibration
    calibration: dict[str, Any]
    records: list[Record]
    evidence: dict[str, RequestEvidence]


@dataclass(frozen=True)
class Suppressed:
    """A version is active with the action's rules: what is left is to certify its requests
    (service.rules.certify), in this run or, after a crash, the next one."""

    rule_set_id: uuid.UUID


def load_activation(
    session: Session, settings: Settings, action_id: uuid.UUID, actor: str
) -> ActivationInputs | Suppressed | Skip:
    """Mark the action running and read what calibration needs; ``Skip.terminal`` when the
    action ended (or failed here for want of forget content); ``Suppressed`` when its rules
    are already in force and only the certificate is missing (a run died in between)."""
    action = session.get(RequestAction, action_id, with_for_update=True)
    if action is None or action.status in TERMINAL_ACTION_STATUSES:
        return Skip.terminal
    in_force = rules_in_force(action)
    if in_force is not None:
        return Suppressed(in_force)
    request = session.get_one(ErasureRequest, action.request_id)
    model = session.get_one(MlModel, action.model_id)
    if request.forget_content is None:
        fail_action(
            session, action, request, "no_forget_content", actor=actor, model_name=model.name
        )
        finish_request_if_done(session, request, actor)
        return Skip.terminal
    current = active_row(session, model.id)
    if action.status == ActionStatus.pending:
        move_action(session, action, ActionStatus.running, actor=actor, model_name=model.name)
    return ActivationInputs(
        action_id=action.id,
        request_id=request.id,
        model_id=model.id,
        config=GenerativeConfig.model_validate(model.config),
        policy=GenerativePolicy.model_validate(model.policy),
        spec=forget_spec(settings, request),
        base_version=current.version if current else None,
        in_force=per_request_rule_sets(settings, current) if current else {},
        stored_evidence=dict(current.calibration.get("evidence") or {}) if current else {},
        companions=_companions(session, settings, action),
    )


def rules_in_force(action: RequestAction) -> uuid.UUID | None:
    """The version that put the action's rules in force while its certificate is still to
    come (set at activation, the action closes when certified)."""
    rule_set_id = (action.detail or {}).get(IN_FORCE)
    return uuid.UUID(rule_set_id) if rule_set_id else None


def _companions(
    session: Session, settings: Settings, action: RequestAction
) -> tuple[Companion, ...]:
    """The model's other rule actions still waiting, with their forget content (one query):
    approved together, they go live together (one calibration, not one per request in turn).
    Actions whose rules are already in force only wait for their certificate."""
    waiting = session.execute(
        select(RequestAction.id, ErasureRequest)
        .join(ErasureRequest, ErasureRequest.id == RequestAction.request_id)
        .where(
            RequestAction.model_id == action.model_id,
            RequestAction.strategy == Strategy.verifier_rules,
            RequestAction.status.in_((ActionStatus.pending, ActionStatus.running)),
            RequestAction.detail[IN_FORCE].astext.is_(None),
            RequestAction.id != action.id,
            ErasureRequest.forget_content.is_not(None),
        )
        .order_by(RequestAction.id)
        .limit(MAX_BATCH)
    ).all()
    return tuple(
        Companion(action_id, request.id, forget_spec(settings, request))
        for action_id, request in waiting
    )


@dataclass(frozen=True)
class _Scorer:
    """How one activation scores each request's evidence: new requests share the leak draw."""

    embedder: PrefetchedEmbedder
    cache: Embedder
    negatives: list[str]
    negative_prompts: Sequence[str | None] | None
    score_negatives: bool
    share: int
    drawn: Mapping[str, LeakDraw]

    def score(self, rid: str, rules: RuleSet, new: bool) -> RequestEvidence:
        draw = self.drawn.get(rid)
        return request_evidence(
            rules,
            self.embedder,
            self.cache,
            self.negatives,
            seed=rid,
            negative_prompts=self.negative_prompts,
            score_negatives=self.score_negatives,
            max_positives=self.share if new else MAX_POSITIVES_PER_REQUEST,
            positives=None if draw is None else draw.positives,
            embedded=None if draw is None else draw.embedded,
        )


def calibrate_activation(
    new_request_id: str,
    new_rules: RuleSet,
    in_force: Mapping[str, RuleSet],
    stored_evidence: Mapping[str, Any],
    negatives: list[str],
    policy: GenerativePolicy,
    *,
    embedder_kind: str,
    scoring_embedder: Embedder,
    cache: Embedder,
    negative_prompts: Sequence[str | None] | None = None,
    score_negatives: bool = True,
    also_new: Mapping[str, RuleSet] | None = None,
) -> ActivationOutcome:
    """Calibrate λ for the rule set of every request in force plus the new one(s) (``also_new``:
    activated together, in one calibration sharing the leak draw, ``positives_per_request``).

    The new requests are always scored; the others' stored evidence is reused while it was
    computed on the same retained answers with the same scoring (``evidence_key``).
    `negative_prompts`: the question of each retained answer (serving scores an answer with
    its prompt); scores of the model's own leaks kept from the budget task's recalibration
    are pooled in while their key matches (the merged rule set of more requests scores them
    at least as high, so pooling them is conservative). `score_negatives=False` (the worker)
    leaves the new request's retained-answer scores, and so the false-flag rate, to the budget
    task: λ needs only the leaks.
    """
    started = time.perf_counter()
    new = {new_request_id: new_rules, **(also_new or {})}
    rule_sets = {**in_force, **new}
    key = evidence_key(embedder_kind, negatives, negative_prompts)
    reusable = stored_evidence.get("by_request", {}) if stored_evidence.get("key") == key else {}
    to_score = {rid for rid in rule_sets if rid not in reusable or rid in new}
    share = positives_per_request(len(new))
    prefetched = PrefetchedEmbedder(scoring_embedder)
    drawn = prefetch_evidence(
        {rid: rs for rid, rs in new.items() if rid in to_score}, prefetched, cache, share
    )
    scorer = _Scorer(prefetched, cache, negatives, negative_prompts, score_negatives, share, drawn)
    evidence = {
        rid: (
            scorer.score(rid, rs, rid in new)
            if rid in to_score
            else RequestEvidence.from_json(reusable[rid])
        )
        for rid, rs in rule_sets.items()
    }
    threshold, calibration, records = _calibrated(evidence, policy, stored_evidence, key)
    calibration["requests_scored"] = len(to_score)
    calibration["requests_activated"] = sorted(new)
    calibration["seconds_to_calibrate"] = round(time.perf_counter() - started, 4)
    return ActivationOutcome(rule_sets, threshold, calibration, records, evidence)


def _calibrated(
    evidence: dict[str, RequestEvidence],
    policy: GenerativePolicy,
    stored_evidence: Mapping[str, Any],
    key: str,
) -> tuple[ThresholdCalibration, dict[str, Any], list[Record]]:
    """λ on the pooled evidence (with the model's own leaks kept under the same key), and the
    evidence stored with the version for the next activation to reuse."""
    same_key = stored_evidence.get("key") == key
    real = [float(s) for s in stored_evidence.get("model_leaks", [])] if same_key else []
    threshold, calibration, records = calibrate_threshold_for(evidence, policy, real)
    calibration["evidence"] = {
        "key": key,
        "by_request": {rid: ev.to_json() for rid, ev in sorted(evidence.items())},
        "model_leaks": real,
    }
    return threshold, calibration, records


def calibrate(inputs: ActivationInputs) -> ActivationOutcome:
    """The worker's call: the model's retained answers and the process's embedders."""
    kind = inputs.config.embedder
    retained = retained_facts(inputs.config.retain_qa_file)
    with one_embedding_thread(kind):
        return _calibrate(inputs, kind, retained)


def _calibrate(inputs: ActivationInputs, kind: str, retained: list[Fact]) -> ActivationOutcome:
    return calibrate_activation(
        str(inputs.request_id),
        compile_rules(inputs.spec),
        inputs.in_force,
        inputs.stored_evidence,
        [f.answer for f in retained],
        inputs.policy,
        embedder_kind=kind,
        scoring_embedder=embedder(kind),
        cache=caching_embedder(kind),
        negative_prompts=[f.question for f in retained],
        score_negatives=False,
        also_new={str(c.request_id): compile_rules(c.spec) for c in inputs.companions},
    )


class ActivationResult(StrEnum):
    activated = "activated"
    stale = "stale"  # another request activated first: calibrate again on the new base


def record_activation(
    session: Session,
    settings: Settings,
    inputs: ActivationInputs,
    activation: ActivationOutcome,
    actor: str,
) -> Suppressed | ActivationResult | Skip:
    """Suppression, in the caller's one transaction: the new version active with every
    request's sealed rules, their actions marked as having rules in force, one audit event
    naming the requests. Nothing per request beyond that: their certificates, events and
    completion follow in a transaction of their own (service.rules.certify)."""
    model = session.get_one(MlModel, inputs.model_id, with_for_update=True)
    ids = sorted({inputs.action_id, *(c.action_id for c in inputs.companions)})
    actions = {
        a.id: a
        for a in session.scalars(
            select(RequestAction)
            .where(RequestAction.id.in_(ids))
            .order_by(RequestAction.id)
            .with_for_update()
        )
    }
    if actions[inputs.action_id].status in TERMINAL_ACTION_STATUSES:
        return Skip.terminal
    row = activate_version(
        session,
        settings,
        model_id=inputs.model_id,
        base_version=inputs.base_version,
        rule_sets=activation.rule_sets,
        calibration=activation.calibration,
        records=activation.records,
    )
    if row is None:
        return ActivationResult.stale
    live = [a for a in actions.values() if a.status not in TERMINAL_ACTION_STATUSES]
    # (An action cancelled or failed meanwhile keeps its state: its rules are in force all the
    # same.) The detail first: the one flush then writes both, one UPDATE per action.
    for action in live:
        action.detail = {**action.detail, IN_FORCE: str(row.id), "rule_set_version": row.version}
    start_actions(session, [a for a in live if a.status == ActionStatus.pending])
    _audit_activation(session, model, row, activation, actor)
    return Suppressed(row.id)


def _audit_activation(
    session: Session,
    model: MlModel,
    row: RuleSetVersion,
    activation: ActivationOutcome,
    actor: str,
) -> None:
    """One event for the activation, naming the requests it put in force (ids only)."""
    calibration = activation.calibration
    append_event(
        session,
        actor=actor,
        action="rules.version_activated",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "version": row.version,
            "rule_count": row.rule_count,
            "requests_activated": calibration["requests_activated"],
            "requests_in_force": len(row.request_ids),
            "serving_threshold": calibration["serving_threshold"],
            "threshold_certified": calibration["threshold_certified"],
            "calibration_positives": activation.threshold.n,
            "seconds_to_calibrate": calibration["seconds_to_calibrate"],
        },
    )
