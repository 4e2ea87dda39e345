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
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.conformal import ThresholdCalibration
from service.audit import append_event
from service.core.config import Settings
from service.db.enums import ActionStatus, Strategy
from service.db.tables import ErasureRequest, MlModel, RequestAction, RuleSetVersion
from service.erasure.certificates import conformal_certificate, issue_certificate
from service.erasure.lifecycle import finish_request_if_done, move_action
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_CALIBRATE_BUDGET
from service.rules.activation import IN_FORCE


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
    threshold = ThresholdCalibration(**row.calibration["threshold"])
    for action in waiting:
        _certify(session, model, requests[action.request_id], action, row, threshold, actor)
    enqueue_after_commit(session, settings, TASK_CALIBRATE_BUDGET, [str(row.id)])
    return len(waiting)


def _certify(
    session: Session,
    model: MlModel,
    request: ErasureRequest,
    action: RequestAction,
    row: RuleSetVersion,
    threshold: ThresholdCalibration,
    actor: str,
) -> None:
    calibration = row.calibration
    append_event(
        session,
        actor=actor,
        action="rules.activated",
        target_type="model",
        target_id=str(model.id),
        request_id=request.id,
        details={
            "model": model.name,
            "version": row.version,
            # The moment of suppression: the version's activation, before this event.
            "active_since": row.activated_at.isoformat() if row.activated_at else None,
            "rule_count": row.rule_count,
            "requests_in_force": len(row.request_ids),
            "serving_threshold": calibration["serving_threshold"],
            "threshold_certified": calibration["threshold_certified"],
            "calibration_positives": threshold.n,
            "seconds_to_calibrate": calibration["seconds_to_calibrate"],
        },
    )
    certificate = conformal_certificate(
        threshold,
        None,
        request=request,
        model=model,
        false_flag_rate=calibration["false_flag_rate"],
        rule_set_version=row.version,
        serving_threshold=calibration["serving_threshold"],
        serving_budget=calibration["serving_budget"],
        stage="interim",
        evidence=calibration["positives_source"],
    )
    issue_certificate(session, action, model, certificate, actor)
    action.detail = {
        k: v for k, v in {**action.detail, "rule_set_version": row.version}.items() if k != IN_FORCE
    }
    move_action(session, action, ActionStatus.done, actor=actor, model_name=model.name)
    finish_request_if_done(session, request, actor)
