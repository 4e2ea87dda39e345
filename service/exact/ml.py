"""The bridge from rows in PostgreSQL to the pure ML library in ``models``."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.artifacts import ArtifactStore, open_store
from models.sisa import Ensemble, Manifest, SisaConfig, TrainingRecord
from models.tabular import FeatureSpec, featurize
from service.core.config import Settings
from service.core.errors import invalid
from service.registry.config import ModelConfig


def artifact_store(settings: Settings) -> ArtifactStore:
    return open_store(settings.artifact_location)


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


def to_training_records(
    spec: FeatureSpec, rows: Sequence[tuple[str, int, dict[str, Any], int]]
) -> list[TrainingRecord]:
    """rows: (record_key, slice, payload, label)."""
    if not rows:
        return []
    x = featurize(spec, [payload for _, _, payload, _ in rows])
    return [
        TrainingRecord(key=key, slice=slice_, x=x[i], y=label)
        for i, (key, slice_, _, label) in enumerate(rows)
    ]


def manifest_from_json(data: Mapping[str, Any]) -> Manifest:
    return Manifest({int(shard): str(ckpt) for shard, ckpt in data.items()})


def manifest_to_json(manifest: Manifest) -> dict[str, str]:
    return {str(shard): ckpt for shard, ckpt in sorted(manifest.items())}


class EnsembleCache:
    """Loaded ensembles by manifest hash: a new version is picked up on the next call."""

    def __init__(self, capacity: int = 4) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Ensemble] = {}
        self._capacity = capacity

    def get(
        self, key: str, config: SisaConfig, manifest: Manifest, store: ArtifactStore
    ) -> Ensemble:
        with self._lock:
            cached = self._items.get(key)
        if cached is not None:
            return cached
        ensemble = Ensemble.load(config, manifest, store)
        with self._lock:
            if len(self._items) >= self._capacity:
                self._items.pop(next(iter(self._items)))
            self._items[key] = ensemble
        return ensemble


ENSEMBLES = EnsembleCache()


def predict_rows(
    ensemble: Ensemble, spec: FeatureSpec, rows: Sequence[Mapping[str, Any]]
) -> np.ndarray:
    return ensemble.predict_proba(featurize(spec, rows))
