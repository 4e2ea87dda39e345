"""Serving a SISA ensemble: average the shard models' class probabilities."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from torch import nn

from models.artifacts import ArtifactStore
from models.sisa.checkpoints import load_checkpoint
from models.sisa.classifier import Classifier, softmax_outputs
from models.sisa.config import SisaConfig
from models.sisa.manifest import Manifest
from models.sisa.network import build_network
from models.sisa.public_base import PublicBase

__all__ = ["Ensemble", "Weighting"]

Weighting = Literal["uniform", "validation"]


def _trained_on_nothing(meta: Any) -> bool:
    if int(meta["num_records"]) == 0:
        return True
    outcome = meta.get("outcome")
    # Every record of the shard may be a validation record: then no step was ever taken.
    return isinstance(outcome, dict) and all(int(s["work"]) == 0 for s in outcome["slices"])


def _validation_accuracy(meta: Any) -> float | None:
    outcome = meta.get("outcome")
    if not isinstance(outcome, dict) or not outcome["slices"]:
        return None
    value = outcome["slices"][-1].get("validation_accuracy")
    return None if value is None else float(value)


class Ensemble(Classifier):
    """``weights[shard]`` scales each member's vote (all 1: a plain average). With a ``base``,
    inputs are raw and go through it first; without, they are already the model's features."""

    def __init__(
        self,
        config: SisaConfig,
        members: dict[int, nn.Module],
        *,
        weights: dict[int, float] | None = None,
        base: PublicBase | None = None,
    ) -> None:
        if base is not None and base.content_hash != config.base_hash:
            raise ValueError("the public base given is not the one this model was trained on")
        self.config = config
        self.members = members
        self.weights = {s: 1.0 for s in members} if weights is None else dict(weights)
        self.base = base

    @classmethod
    def load(
        cls,
        config: SisaConfig,
        manifest: Manifest,
        store: ArtifactStore,
        *,
        weighting: Weighting = "uniform",
        base: PublicBase | None = None,
    ) -> Ensemble:
        """Load every shard's final checkpoint. Shards trained on no records are left out: their
        untrained networks would only blur the vote.

        ``weighting="validation"`` weights each shard by its accuracy on its own validation
        records, stored with its checkpoint: a function of that shard's data alone, recomputed
        whenever the shard retrains, so erasure stays exact (shards without one weigh 1).
        """
        members: dict[int, nn.Module] = {}
        weights: dict[int, float] = {}
        for shard in manifest:
            checkpoint = load_checkpoint(store, manifest[shard])
            if _trained_on_nothing(checkpoint.meta):
                continue
            network = build_network(config, shard)
            network.load_state_dict(checkpoint.model_state)
            network.eval()
            members[shard] = network
            accuracy = _validation_accuracy(checkpoint.meta)
            weights[shard] = 1.0 if weighting == "uniform" or accuracy is None else accuracy
        return cls(config, members, weights=weights, base=base)

    @property
    def shards(self) -> list[int]:
        return sorted(self.members)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not self.members:
            raise ValueError("the ensemble has no shard trained on any record")
        features = x if self.base is None else self.base.features(x)
        total = np.zeros((len(features), self.config.num_classes), dtype=np.float64)
        weight_sum = sum(self.weights[s] for s in self.shards)
        for shard in self.shards:
            weight = self.weights[shard] if weight_sum > 0 else 1.0
            total += weight * softmax_outputs(self.members[shard], features)
        return total / (weight_sum if weight_sum > 0 else len(self.members))
