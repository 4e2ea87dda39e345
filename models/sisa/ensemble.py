"""Serving a SISA ensemble: average the shard models' class probabilities."""

from __future__ import annotations

import numpy as np
from torch import nn

from models.artifacts import ArtifactStore
from models.sisa.checkpoints import load_checkpoint
from models.sisa.classifier import Classifier, softmax_outputs
from models.sisa.config import SisaConfig
from models.sisa.manifest import Manifest
from models.sisa.network import build_network

__all__ = ["Ensemble"]


class Ensemble(Classifier):
    def __init__(self, config: SisaConfig, members: dict[int, nn.Module]) -> None:
        self.config = config
        self.members = members

    @classmethod
    def load(cls, config: SisaConfig, manifest: Manifest, store: ArtifactStore) -> Ensemble:
        """Load every shard's final checkpoint. Shards trained on no records are left out: their
        untrained networks would only blur the vote."""
        members: dict[int, nn.Module] = {}
        for shard in manifest:
            checkpoint = load_checkpoint(store, manifest[shard])
            if int(checkpoint.meta["num_records"]) == 0:
                continue
            network = build_network(config, shard)
            network.load_state_dict(checkpoint.model_state)
            network.eval()
            members[shard] = network
        return cls(config, members)

    @property
    def shards(self) -> list[int]:
        return sorted(self.members)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not self.members:
            raise ValueError("the ensemble has no shard trained on any record")
        total = np.zeros((len(x), self.config.num_classes), dtype=np.float64)
        for shard in self.shards:
            total += softmax_outputs(self.members[shard], x)
        return total / len(self.members)
