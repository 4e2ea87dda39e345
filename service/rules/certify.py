"""Certifying the requests a rule-set version put in force: each request's audit event,
interim certificate, its action done and the request completed when nothing else is left,
then the budget calibration sent — one transaction, right after the activation's.

Suppression is the activation's commit (service.rules.activation.record_activation); this is
the paperwork after it, kept out of that transaction so that the time to suppression does not
grow with the number of requests activated together. It reads everything from the database
(the version's stored calibration, the actions marked with it), so a run that died between
the two transactions is finished by the next one (acks_late, or the reaper: the action is
still running with no worker's lease) without activating anything again. Safe to run twice:
an action already done is left alone.

A request is certified on the version that serves its rules when it is certified: after such a
crash another activation may have superseded the version that put its rules in force (the new
one holds them too), and that version's budget calibration may be over already, its
certificates re-issued; certified on the superseded version, the request would keep an interim
certificate naming rules no longer served.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.conformal import BudgetCalibration, ExitCalibration, ThresholdCalibration
from service.audit import append_event
from service.core.config import Settings
from service.db.enums import ActionStatus, RuleSetStatus, Strategy
from service.db.tables import ErasureRequest, MlModel, RequestAction, RuleSetVersion
from service.erasure.certificates import (
    ConformalRiskCertificate,
    conformal_certificate,
    issue_certificate,
)
from service.erasure.lifecycle import finish_request_if_done, move_action
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_CALIBRATE_BUDGET
from service.rules.activation import IN_FORCE
from service.rules.rulesets import active_row


def certify_activation(
    session: Session, settings: Settings, rule_set_id: uuid.UUID, actor: str
) -> int:
    """Certify every request whose rules ``rule_set_id`` put in force and that is still
    waiting for its certificate; returns how many. The budget calibration is sent after
    commit, once the certificates it re-issues exist."""
    row = session.get_one(RuleSetVersion, rule_set_id)
    model = session.get_one(MlModel, row.model_id)
    waiting = session.scalars(
        select(RequestAction)
        .where(
            RequestAction.model_id == row.model_id,
            RequestAction.strategy == Strategy.verifier_rules,
            RequestAction.status == ActionStatus.running,
            RequestAction.detail[IN_FORCE].astext == str(row.id),
        )
        .order_by(RequestAction.id)
        .with_for_update()
    ).all()
    requests = {
        r.id: r
        for r in session.scalars(
            select(ErasureRequest)
            .where(ErasureRequest.id.in_([a.request_id for a in waiting]))
            .order_by(ErasureRequest.id)
            .with_for_update()
        )
    }
    serving = _serving(session, row)
    for action in waiting:
        request = requests[action.request_id]
        # The version serving the request's rules: the one that put them in force, or the
        # newer one holding them that superseded it while this run was dead.
        holds = serving if serving and str(request.id) in serving.request_ids else row
        _certify(session, model, request, action, row, holds, actor)
    if serving is not None and budget_pending(serving):
        enqueue_after_commit(session, settings, TASK_CALIBRATE_BUDGET, [str(serving.id)])
    return len(waiting)


def _serving(session: Session, row: RuleSetVersion) -> RuleSetVersion | None:
    """The model's active version: ``row`` itself unless a newer one superseded it."""
    if row.status == RuleSetStatus.active:
        return row
    return active_row(session, row.model_id)


def budget_pending(row: RuleSetVersion) -> bool:
    """Whether the version still serves with its activation's interim calibration (its
    budget task re-issues its requests' certificates when it ends)."""
    return bool(row.calibration.get("budget", {}).get("status") == "pending")


def _certify(
    session: Session,
    model: MlModel,
    request: ErasureRequest,
    action: RequestAction,
    activated: RuleSetVersion,
    serving: RuleSetVersion,
    actor: str,
) -> None:
    """`activated` put the request's rules in force; `serving` serves them now (the same
    version, unless a newer one superseded it): the certificate states `serving`'s
    calibration, final when its budget task has ended already."""
    calibration = activated.calibration
    details = {
        "model": model.name,
        "version": activated.version,
        # The moment of suppression: the version's activation, before this event.
        "active_since": activated.activated_at.isoformat() if activated.activated_at else None,
        "rule_count": activated.rule_count,
        "requests_in_force": len(activated.request_ids),
        "serving_threshold": calibration["serving_threshold"],
        "threshold_certified": calibration["threshold_certified"],
        "calibration_positives": calibration["threshold"]["n"],
        "seconds_to_calibrate": calibration["seconds_to_calibrate"],
    }
    if serving.id != activated.id:
        details["now_served_by_version"] = serving.version
    append_event(
        session,
        actor=actor,
        action="rules.activated",
        target_type="model",
        target_id=str(model.id),
        request_id=request.id,
        details=details,
    )
    certificate = (
        interim_certificate(serving, model, request)
        if budget_pending(serving)
        else final_certificate(serving, model, request)
    )
    issue_certificate(session, action, model, certificate, actor)
    action.detail = {
        k: v
        for k, v in {**action.detail, "rule_set_version": serving.version}.items()
        if k != IN_FORCE
    }
    move_action(session, action, ActionStatus.done, actor=actor, model_name=model.name)
    finish_request_if_done(session, request, actor)


def interim_certificate(
    row: RuleSetVersion, model: MlModel, request: ErasureRequest
) -> ConformalRiskCertificate:
    """The certificate of a version whose budget is still to be calibrated: λ from the
    activation, the maximum refinement budget."""
    cal = row.calibration
    return conformal_certificate(
        ThresholdCalibration(**cal["threshold"]),
        None,
        request=request,
        model=model,
        false_flag_rate=cal["false_flag_rate"],
        rule_set_version=row.version,
        serving_threshold=cal["serving_threshold"],
        serving_budget=cal["serving_budget"],
        stage="interim",
        evidence=cal["positives_source"],
    )


def final_certificate(
    row: RuleSetVersion, model: MlModel, request: ErasureRequest
) -> ConformalRiskCertificate:
    """The certificate of a version whose λ, B and exit are calibrated on generations."""
    cal = row.calibration
    budget = BudgetCalibration(
        **{k: v for k, v in cal["budget"].items() if k in BudgetCalibration.__dataclass_fields__}
    )
    return conformal_certificate(
        ThresholdCalibration(**cal["threshold"]),
        budget,
        request=request,
        model=model,
        false_flag_rate=cal.get("false_flag_rate"),
        rule_set_version=row.version,
        serving_threshold=float(cal["serving_threshold"]),
        serving_budget=int(cal["serving_budget"]),
        exit_cal=ExitCalibration(**cal["exit"]),
        serving_exit_threshold=cal["serving_exit_threshold"],
        stage="final",
        evidence=str(cal["positives_source"]),
    )
