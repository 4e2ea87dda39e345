"""Reading what a training job needs in one short transaction, then closing it; the bridge
from rows in PostgreSQL to the pure ML library in ``models``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.artifacts import ArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    PublicBase,
    SisaConfig,
    TrainingRecord,
    VersionManifest,
    Weighting,
)
from models.tabular import FeatureSpec, featurize
from service.core.config import get_settings
from service.core.errors import invalid
from service.core.subject_keys import PayloadReader
from service.db.enums import RecordSplit
from service.db.tables import MlModel, ModelVersion
from service.db.tables import TrainingRecord as RecordRow
from service.exact.public_base import base_features, load_public_base
from service.registry.config import ModelConfig, ModelPolicy


def sisa_config(model_config: Mapping[str, Any]) -> SisaConfig:
    config = ModelConfig.model_validate(model_config)
    if config.sisa_config is None:
        raise invalid("no_training_records", "the model has no training records yet")
    return SisaConfig.from_dict(config.sisa_config)


def feature_spec(model_config: Mapping[str, Any]) -> FeatureSpec:
    spec = ModelConfig.model_validate(model_config).feature_spec
    if spec is None:
        raise invalid("no_training_records", "the model has no training records yet")
    return FeatureSpec.from_dict(spec)


def public_base(model_config: Mapping[str, Any]) -> PublicBase | None:
    """The model's public base, loaded and checked against its content hash (None: none)."""
    config = ModelConfig.model_validate(model_config)
    if config.public_base is None:
        return None
    return load_public_base(config.public_base, feature_spec(model_config).input_dim)


def load_ensemble(snapshot: ModelSnapshot, manifest: Manifest, store: ArtifactStore) -> Ensemble:
    """The ensemble of ``manifest`` as the model serves it (its aggregation; raw inputs
    go through the public base when it has one)."""
    return Ensemble.load(
        snapshot.config, manifest, store, weighting=snapshot.aggregation, base=snapshot.base
    )


def to_training_records(
    spec: FeatureSpec,
    rows: Sequence[tuple[str, int, dict[str, Any], int]],
    base: PublicBase | None = None,
) -> list[TrainingRecord]:
    """rows: (record_key, slice, payload, label); features through the public base if any."""
    if not rows:
        return []
    x = base_features(base, featurize(spec, [payload for _, _, payload, _ in rows]))
    return [
        TrainingRecord(key=key, slice=slice_, x=x[i], y=label)
        for i, (key, slice_, _, label) in enumerate(rows)
    ]


@dataclass(frozen=True)
class ModelSnapshot:
    model_id: uuid.UUID
    name: str
    config: SisaConfig
    spec: FeatureSpec
    policy: ModelPolicy
    version_number: int | None
    manifest: VersionManifest | None
    holdout_x: np.ndarray
    """Raw (featurized, not through the base) held-out inputs: ensembles take raw inputs."""
    holdout_y: np.ndarray
    base: PublicBase | None = None
    aggregation: Weighting = "uniform"


def _rows(
    session: Session, reader: PayloadReader | None, *conditions: Any
) -> list[tuple[str, int, dict[str, Any], int]]:
    """The rows' keys, slices, opened payloads and labels. Pass one ``reader`` to every load
    of a task: each reader loads and unwraps the key bundles it touches (256 per model)."""
    result = session.execute(
        select(RecordRow.record_key, RecordRow.slice, RecordRow.payload, RecordRow.label)
        .where(*conditions)
        .order_by(RecordRow.record_key)
    )
    reader = reader or PayloadReader(get_settings())
    return [(k, s, reader.open(p), y) for k, s, p, y in result if p is not None and y is not None]


def load_model_snapshot(
    session: Session, model: MlModel, reader: PayloadReader | None = None
) -> ModelSnapshot:
    spec = feature_spec(model.config)
    base = public_base(model.config)
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
            reader,
            RecordRow.model_id == model.id,
            RecordRow.split == RecordSplit.holdout,
            RecordRow.erasure_request_id.is_(None),
        ),
    )
    settings = ModelConfig.model_validate(model.config)
    return ModelSnapshot(
        model_id=model.id,
        name=model.name,
        config=sisa_config(model.config),
        spec=spec,
        policy=ModelPolicy.model_validate(model.policy),
        version_number=version.number if version else None,
        manifest=VersionManifest.from_json(version.manifest) if version else None,
        holdout_x=stack_x(holdout, spec.input_dim),
        holdout_y=np.array([r.y for r in holdout], dtype=np.int64),
        base=base,
        aggregation=settings.sisa.aggregation,
    )


def stack_x(records: list[TrainingRecord], dim: int) -> np.ndarray:
    if not records:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([r.x for r in records]).astype(np.float32)


def load_retained(
    session: Session,
    model_id: uuid.UUID,
    spec: FeatureSpec,
    shard: int | None,
    base: PublicBase | None = None,
    reader: PayloadReader | None = None,
) -> list[TrainingRecord]:
    """Train-split rows that no erasure request has claimed (all shards when shard is None)."""
    conditions = [
        RecordRow.model_id == model_id,
        RecordRow.split == RecordSplit.train,
        RecordRow.erasure_request_id.is_(None),
    ]
    if shard is not None:
        conditions.append(RecordRow.shard == shard)
    return to_training_records(spec, _rows(session, reader, *conditions), base)


def load_retained_by_shard(
    session: Session,
    model_id: uuid.UUID,
    spec: FeatureSpec,
    shards: int,
    base: PublicBase | None = None,
    reader: PayloadReader | None = None,
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
            RecordRow.split == RecordSplit.train,
            RecordRow.erasure_request_id.is_(None),
        )
        .order_by(RecordRow.shard, RecordRow.record_key)
    )
    grouped: dict[int, list[tuple[str, int, dict[str, Any], int]]] = {s: [] for s in range(shards)}
    reader = reader or PayloadReader(get_settings())
    for shard, key, slice_, payload, label in result:
        if payload is not None and label is not None:
            grouped[shard].append((key, slice_, reader.open(payload), label))
    return {shard: to_training_records(spec, rows, base) for shard, rows in grouped.items()}


def load_pending_erasure(
    session: Session,
    model_id: uuid.UUID,
    spec: FeatureSpec,
    shard: int,
    base: PublicBase | None = None,
    reader: PayloadReader | None = None,
) -> list[TrainingRecord]:
    """Claimed by a request but not yet purged: used for membership evidence, then deleted."""
    return to_training_records(
        spec,
        _rows(
            session,
            reader,
            RecordRow.model_id == model_id,
            RecordRow.split == RecordSplit.train,
            RecordRow.shard == shard,
            RecordRow.erasure_request_id.is_not(None),
            RecordRow.erased_at.is_(None),
        ),
        base,
    )
