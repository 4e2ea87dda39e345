"""The planner: which way to forget, per (request, model).

Models lethe trains (it owns their training data) are unlearned exactly by slice retraining;
generative models it cannot retrain get verifier rules (inference-time unlearning).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.enums import ModelKind, Strategy
from service.db.tables import ErasureRequest, MlModel, TrainingRecord


@dataclass(frozen=True)
class PlannedAction:
    model: MlModel
    strategy: Strategy | None  # None: the model holds nothing of the subject
    train_shards: tuple[int, ...]
    holdout_records: int


def models_in_scope(session: Session, request: ErasureRequest) -> list[MlModel]:
    stmt = select(MlModel).order_by(MlModel.name)
    if request.scope is not None:
        stmt = stmt.where(MlModel.name.in_(request.scope))
    return list(session.scalars(stmt))


def plan_model(session: Session, request: ErasureRequest, model: MlModel) -> PlannedAction:
    if model.kind == ModelKind.generative:
        # Rules are needed whether or not lethe ever saw this subject: the model may know them.
        return PlannedAction(model, Strategy.verifier_rules, (), 0)
    subject_rows = select(TrainingRecord.split, TrainingRecord.shard, func.count()).where(
        TrainingRecord.model_id == model.id,
        TrainingRecord.subject_ref == request.subject_ref,
        TrainingRecord.erased_at.is_(None),
    )
    rows = session.execute(subject_rows.group_by(TrainingRecord.split, TrainingRecord.shard)).all()
    if not rows:
        return PlannedAction(model, None, (), 0)
    shards = tuple(sorted({shard for split, shard, _ in rows if split == "train"}))
    holdout = sum(int(n) for split, _, n in rows if split == "holdout")
    return PlannedAction(model, Strategy.exact_retrain, shards, holdout)
