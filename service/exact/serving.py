"""Serving a model lethe trained: predictions from the current version's ensemble."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from models.artifacts import ArtifactStore
from models.sisa import Ensemble, PublicBase, SisaConfig, VersionManifest, Weighting
from models.tabular import featurize
from service.core.config import Settings
from service.core.errors import conflict, invalid
from service.core.storage import artifact_store
from service.db.enums import ModelKind, ModelStatus
from service.db.tables import MlModel
from service.exact.snapshot import feature_spec, public_base, sisa_config
from service.registry.config import ModelConfig
from service.registry.service import current_version


class EnsembleCache:
    """Loaded ensembles by manifest hash: a new version is picked up on the next call."""

    def __init__(self, capacity: int = 4) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Ensemble] = {}
        self._capacity = capacity

    def get(
        self,
        key: str,
        config: SisaConfig,
        manifest: VersionManifest,
        store: ArtifactStore,
        *,
        weighting: Weighting = "uniform",
        base: PublicBase | None = None,
    ) -> Ensemble:
        key = f"{key}|{weighting}"
        with self._lock:
            cached = self._items.get(key)
        if cached is not None:
            return cached
        ensemble = Ensemble.load(config, manifest.finals, store, weighting=weighting, base=base)
        with self._lock:
            if len(self._items) >= self._capacity:
                self._items.pop(next(iter(self._items)))
            self._items[key] = ensemble
        return ensemble


ENSEMBLES = EnsembleCache()


@dataclass(frozen=True)
class Prediction:
    version: int
    classes: list[str]
    predictions: list[str]
    probabilities: list[list[float]]


def predict(
    settings: Settings, session: Session, model: MlModel, rows: Sequence[Mapping[str, Any]]
) -> Prediction:
    """Reads the current version, closes the session, then predicts (no transaction held)."""
    if model.kind != ModelKind.sharded_classifier:
        raise conflict("wrong_model_kind", "use /generate for generative models")
    version = current_version(session, model)
    if model.status != ModelStatus.ready or version is None:
        raise conflict("model_not_ready", "the model has no trained version yet")
    config = sisa_config(model.config)
    spec = feature_spec(model.config)
    model_settings = ModelConfig.model_validate(model.config)
    classes = list(model_settings.classes or [])
    base = public_base(model.config)
    number, key = version.number, version.manifest_hash
    manifest = VersionManifest.from_json(version.manifest)
    session.close()
    ensemble = ENSEMBLES.get(
        key,
        config,
        manifest,
        artifact_store(settings),
        weighting=model_settings.sisa.aggregation,
        base=base,
    )
    try:
        features = featurize(spec, rows)
    except ValueError:
        # The message would quote a column name the caller sent: a stable code only.
        raise invalid("invalid_rows", "a row does not fit the model's columns") from None
    probabilities = ensemble.predict_proba(features)
    return Prediction(
        version=number,
        classes=classes,
        predictions=[classes[int(i)] for i in probabilities.argmax(axis=1)],
        probabilities=[[round(float(p), 6) for p in row] for row in probabilities],
    )
