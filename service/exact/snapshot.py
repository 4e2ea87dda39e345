"""Reading what a training job needs in one short transaction, then closing it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.sisa import SisaConfig, TrainingRecord
from models.tabular import FeatureSpec
from service.db.tables import MlModel, ModelVersion
from service.db.tables import TrainingRecord as RecordRow
from service.exact.ml import feature_spec, sisa_config, to_training_records
from service.registry.config import ModelPolicy


@dataclass(frozen=True)
class ModelSnapshot:
    model_id: uuid.UUID
    name: str
    config: SisaConfig
    spec: FeatureSpec
    policy: ModelPolicy
    version_number: int | None
    manifest: dict[str, Any] | None
    holdout_x: np.ndarray
    holdout_y: np.ndarray


def _rows(session: Session, *conditions: Any) -> list[tuple[str, int, dict[str, Any], int]]:
    result = session.execute(
        select(RecordRow.record_key, RecordRow.slice, RecordRow.payload, RecordRow.label)
        .where(*conditions)
        .order_by(RecordRow.record_key)
    )
    return [(k, s, p, y) for k, s, p, y in result if p is not None and y is not None]


def load_model_snapshot(session: Session, model: MlModel) -> ModelSnapshot:
    spec = feature_spec(model.config)
    version = None
    if model.current_version is not None:
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.number == model.current_version
            )
        )
    holdout = to_training_records(
        spec,
        _rows(
            session,
            RecordRow.model_id == model.id,
            RecordRow.split == "holdout",
            RecordRow.erasure_request_id.is_(None),
        ),
    )
    return ModelSnapshot(
        model_id=model.id,
        name=model.name,
        config=sisa_config(model.config),
        spec=spec,
        policy=ModelPolicy.model_validate(model.policy),
        version_number=version.number if version else None,
        manifest=dict(version.manifest) if version else None,
        holdout_x=stack_x(holdout, spec.input_dim),
        holdout_y=np.array([r.y for r in holdout], dtype=np.int64),
    )


def stack_x(records: list[TrainingRecord], dim: int) -> np.ndarray:
    if not records:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([r.x for r in records]).astype(np.float32)


def load_retained(
    session: Session, model_id: uuid.UUID, spec: FeatureSpec, shard: int | None
) -> list[TrainingRecord]:
    """Train-split rows that no erasure request has claimed (all shards when shard is None)."""
    conditions = [
        RecordRow.model_id == model_id,
        RecordRow.split == "train",
        RecordRow.erasure_request_id.is_(None),
    ]
    if shard is not None:
        conditions.append(RecordRow.shard == shard)
    return to_training_records(spec, _rows(session, *conditions))


def load_retained_by_shard(
    session: Session, model_id: uuid.UUID, spec: FeatureSpec, shards: int
) -> dict[int, list[TrainingRecord]]:
    result = session.execute(
        select(
            RecordRow.shard,
            RecordRow.record_key,
            RecordRow.slice,
            RecordRow.payload,
            RecordRow.label,
        )
        .where(
            RecordRow.model_id == model_id,
            RecordRow.split == "train",
            RecordRow.erasure_request_id.is_(None),
        )
        .order_by(RecordRow.shard, RecordRow.record_key)
    )
    grouped: dict[int, list[tuple[str, int, dict[str, Any], int]]] = {s: [] for s in range(shards)}
    for shard, key, slice_, payload, label in result:
        if payload is not None and label is not None:
            grouped[shard].append((key, slice_, payload, label))
    return {shard: to_training_records(spec, rows) for shard, rows in grouped.items()}


def load_pending_erasure(
    session: Session, model_id: uuid.UUID, spec: FeatureSpec, shard: int
) -> list[TrainingRecord]:
    """Claimed by a request but not yet purged: used for membership evidence, then deleted."""
    return to_training_records(
        spec,
        _rows(
            session,
            RecordRow.model_id == model_id,
            RecordRow.split == "train",
            RecordRow.shard == shard,
            RecordRow.erasure_request_id.is_not(None),
            RecordRow.erased_at.is_(None),
        ),
    )
