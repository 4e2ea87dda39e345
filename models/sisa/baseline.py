"""The comparison point for benchmarks: one network trained on all the data, no sharding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.sisa.classifier import Classifier, softmax_outputs
from models.sisa.config import SisaConfig
from models.sisa.determinism import deterministic_torch
from models.sisa.network import build_network
from models.sisa.training import build_optimizer, fit_epochs

__all__ = ["SingleModel", "single_model_baseline"]


class SingleModel(Classifier):
    def __init__(self, network: nn.Module) -> None:
        self.network = network

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax_outputs(self.network, x)


def single_model_baseline(config: SisaConfig, x: np.ndarray, y: np.ndarray) -> SingleModel:
    """Train the shard network once on all of ``x, y`` for ``config.epochs`` epochs: the same
    architecture, optimizer and amount of work as the whole SISA ensemble, without sharding."""
    with deterministic_torch(), torch.enable_grad():
        network = build_network(config, shard=-1)
        optimizer = build_optimizer(config, network)
        fit_epochs(
            network,
            optimizer,
            torch.as_tensor(np.asarray(x, dtype=np.float32)),
            torch.as_tensor(np.asarray(y, dtype=np.int64)),
            epochs=config.epochs,
            batch_size=config.batch_size,
            seed_parts=(config.seed, "single-model"),
        )
    return SingleModel(network)
