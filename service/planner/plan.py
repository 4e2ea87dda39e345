"""The planner: which way to forget, per (request, model), and the actions and jobs that do it.

Models lethe trains (it owns their training data) are unlearned exactly by slice retraining;
generative models it cannot retrain get verifier rules (inference-time unlearning). Planning
runs in one short transaction of the ``process_request`` task; the ML work it creates is sent
only after that transaction commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.db.enums import (
    TERMINAL_REQUEST_STATUSES,
    ActionStatus,
    ModelKind,
    ModelStatus,
    RecordSplit,
    RequestStatus,
    Strategy,
)
from service.db.tables import ActionJob, ErasureRequest, MlModel, RequestAction, TrainingRecord
from service.erasure.filing import get_request
from service.erasure.lifecycle import finish_request_if_done, move_action, start_request
from service.exact.finish import finish_exact_action
from service.finetune.retrain import open_exact
from service.jobs.lifecycle import open_retrain, send_pending_jobs
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_UPDATE_VERIFIER_RULES


@dataclass(frozen=True)
class PlannedAction:
    model: MlModel
    strategy: Strategy
    train_shards: tuple[int, ...]
    holdout_records: int
    skip: Skip | None = None
    """Why the action has nothing to do (it is recorded as skipped), or None."""


class PlanResult(StrEnum):
    model_training = "model_training"  # a model's record set is in flux: plan again later
    planned = "planned"  # actions exist; some still run
    finished = "finished"  # every action ended and the request closed


def models_in_scope(session: Session, request: ErasureRequest) -> list[MlModel]:
    stmt = select(MlModel).order_by(MlModel.name)
    if request.scope is not None:
        stmt = stmt.where(MlModel.name.in_(request.scope))
    return list(session.scalars(stmt))


def is_both(model: MlModel) -> bool:
    """Policy ``both``: a generative model lethe fine-tunes gets rules now, exact removal later."""
    return model.kind == ModelKind.generative and model.policy.get("strategy") == "both"


def plan_model_actions(
    session: Session, request: ErasureRequest, model: MlModel
) -> list[PlannedAction]:
    """One action per model, or two under policy ``both`` (rules first, exact second)."""
    if is_both(model):
        rules = PlannedAction(model, Strategy.verifier_rules, (), 0)
        return [rules, _plan_records(session, request, model)]
    return [plan_model(session, request, model)]


def plan_model(session: Session, request: ErasureRequest, model: MlModel) -> PlannedAction:
    if model.kind == ModelKind.generative:
        # Rules are needed whether or not lethe ever saw this subject: the model may know them.
        return PlannedAction(model, Strategy.verifier_rules, (), 0)
    return _plan_records(session, request, model)


def _plan_records(session: Session, request: ErasureRequest, model: MlModel) -> PlannedAction:
    subject_rows = select(TrainingRecord.split, TrainingRecord.shard, func.count()).where(
        TrainingRecord.model_id == model.id,
        TrainingRecord.subject_ref == request.subject_ref,
        TrainingRecord.erased_at.is_(None),
    )
    rows = session.execute(subject_rows.group_by(TrainingRecord.split, TrainingRecord.shard)).all()
    if not rows:
        return PlannedAction(model, Strategy.exact_retrain, (), 0, Skip.no_records_of_subject)
    shards = tuple(sorted({shard for split, shard, _ in rows if split == RecordSplit.train}))
    holdout = sum(int(n) for split, _, n in rows if split == RecordSplit.holdout)
    return PlannedAction(model, Strategy.exact_retrain, shards, holdout)


def plan_request(
    session: Session, settings: Settings, request_id: uuid.UUID, actor: str
) -> PlanResult | Skip:
    """Start an approved request and plan one action per model in scope; on a second run,
    re-send whatever is still pending (messages can be lost). Safe to run twice."""
    request = get_request(session, request_id, lock=True)
    if request.status in TERMINAL_REQUEST_STATUSES:
        return Skip.terminal
    if request.status == RequestStatus.received:
        return Skip.not_approved
    models = models_in_scope(session, request)
    if any(m.status == ModelStatus.training for m in models):
        return PlanResult.model_training
    if request.status == RequestStatus.approved:
        start_request(session, request, actor, [m.name for m in models])
    existing = {
        (a.model_id, a.strategy): a
        for a in session.scalars(
            select(RequestAction).where(RequestAction.request_id == request.id)
        )
    }
    for model in models:
        for planned in plan_model_actions(session, request, model):
            action = existing.get((model.id, planned.strategy))
            if action is None:
                _plan_action(session, settings, request, planned, actor)
            elif action.status in (ActionStatus.pending, ActionStatus.running):
                _resend(session, settings, action)
    finished = finish_request_if_done(session, request, actor)
    return PlanResult.finished if finished else PlanResult.planned


def _plan_action(
    session: Session,
    settings: Settings,
    request: ErasureRequest,
    planned: PlannedAction,
    actor: str,
) -> None:
    model = planned.model
    action = _new_action(session, request, planned)
    if planned.skip is not None:
        move_action(
            session,
            action,
            ActionStatus.skipped,
            actor=actor,
            model_name=model.name,
            details={"reason": planned.skip.value},
        )
        return
    _audit_planned(session, request, planned, action, actor)
    if planned.strategy == Strategy.verifier_rules:
        _resend(session, settings, action)
        return
    _claim_subject_rows(session, request, model)
    nothing_trained = _nothing_to_retrain(planned, model)
    if nothing_trained is not None:
        # Deleting the rows is the whole erasure: no model version ever learned from them.
        finish_exact_action(
            session,
            settings,
            action,
            request,
            model,
            shards=[],
            version_before=model.current_version,
            version_after=model.current_version,
            actor=actor,
            note=NOTHING_TO_RETRAIN[nothing_trained],
        )
        return
    if model.kind == ModelKind.generative:  # a fine-tune lethe trains (policy "both")
        open_exact(session, settings, action, model, actor)
        return
    _open_shard_retrains(session, settings, action, planned, actor)


def _new_action(session: Session, request: ErasureRequest, planned: PlannedAction) -> RequestAction:
    action = RequestAction(
        id=uuid.uuid4(),
        request_id=request.id,
        model_id=planned.model.id,
        strategy=planned.strategy,
        status=ActionStatus.pending,
        detail={"shards": list(planned.train_shards), "holdout_records": planned.holdout_records},
    )
    session.add(action)
    session.flush()
    return action


def _claim_subject_rows(session: Session, request: ErasureRequest, model: MlModel) -> None:
    """Mark the subject's rows: from now on no training of this model includes them."""
    session.execute(
        update(TrainingRecord)
        .where(
            TrainingRecord.model_id == model.id,
            TrainingRecord.subject_ref == request.subject_ref,
            TrainingRecord.erasure_request_id.is_(None),
        )
        .values(erasure_request_id=request.id)
    )


def _open_shard_retrains(
    session: Session,
    settings: Settings,
    action: RequestAction,
    planned: PlannedAction,
    actor: str,
) -> None:
    """One retrain per shard that held the subject's training rows (joining one not started
    yet), sent after commit."""
    model = planned.model
    move_action(session, action, ActionStatus.running, actor=actor, model_name=model.name)
    for shard in planned.train_shards:
        job = open_retrain(session, model.id, shard)
        session.add(ActionJob(action_id=action.id, job_id=job.id))
    session.flush()
    send_pending_jobs(session, settings, action)


def _resend(session: Session, settings: Settings, action: RequestAction) -> None:
    if action.strategy == Strategy.verifier_rules:
        # Safe to send twice: the task exits early once the action is done.
        enqueue_after_commit(session, settings, TASK_UPDATE_VERIFIER_RULES, [str(action.id)])
    else:
        send_pending_jobs(session, settings, action)


# The certificate's note when deleting the rows is the whole erasure.
NOTHING_TO_RETRAIN = {
    Skip.held_out_only: (
        "The subject's records were held out for evaluation and never trained on; "
        "they were deleted and no shard needed retraining."
    ),
    Skip.model_untrained: (
        "The model had not been trained yet; the records were deleted before training."
    ),
}


def _nothing_to_retrain(planned: PlannedAction, model: MlModel) -> Skip | None:
    """Why no shard needs retraining, or None when some does."""
    if not planned.train_shards:
        return Skip.held_out_only
    if model.current_version is None:
        return Skip.model_untrained
    return None


def _audit_planned(
    session: Session,
    request: ErasureRequest,
    planned: PlannedAction,
    action: RequestAction,
    actor: str,
) -> None:
    append_event(
        session,
        actor=actor,
        action="action.planned",
        target_type="model",
        target_id=str(planned.model.id),
        request_id=request.id,
        details={
            "model": planned.model.name,
            "strategy": action.strategy.value,
            "shards": list(planned.train_shards),
            "holdout_records": planned.holdout_records,
        },
    )
