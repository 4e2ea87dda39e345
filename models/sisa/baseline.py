"""The comparison point for benchmarks: one network trained on all the data, no sharding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from models.sisa.classifier import Classifier, softmax_outputs
from models.sisa.config import SisaConfig
from models.sisa.fitting import (
    EarlyStoppingOutcome,
    build_optimizer,
    fit_epochs,
    fit_with_early_stopping,
)
from models.sisa.network import build_network
from models.sisa.partition import is_validation_record
from models.slicing.determinism import deterministic_torch

__all__ = ["SingleModel", "single_model_baseline"]


class SingleModel(Classifier):
    def __init__(self, network: nn.Module, outcome: EarlyStoppingOutcome | None = None) -> None:
        self.network = network
        self.outcome = outcome
        """How early stopping went (None under the fixed-epoch schedule)."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return softmax_outputs(self.network, x)


def single_model_baseline(
    config: SisaConfig, x: np.ndarray, y: np.ndarray, *, keys: Sequence[str] | None = None
) -> SingleModel:
    """Train the shard network once on all of ``x, y``: the same architecture, optimizer and
    schedule as a shard, without sharding or slicing.

    Under early stopping the validation records are chosen by key exactly as in a shard
    (``keys`` default to the row numbers), so both sides give up the same records to validation
    and the comparison is fair; the fixed schedule trains ``config.epochs`` epochs.
    """
    inputs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(y, dtype=np.int64))
    with deterministic_torch(), torch.enable_grad():
        network = build_network(config, shard=-1)
        optimizer = build_optimizer(config, network)
        if not config.early_stopping:
            fit_epochs(
                network,
                optimizer,
                inputs,
                labels,
                epochs=config.epochs,
                batch_size=config.batch_size,
                seed_parts=(config.seed, "single-model"),
            )
            return SingleModel(network)
        names = [str(i) for i in range(len(labels))] if keys is None else list(keys)
        held_out = torch.tensor([is_validation_record(k, config) for k in names], dtype=torch.bool)
        outcome = fit_with_early_stopping(
            network,
            optimizer,
            inputs[~held_out],
            labels[~held_out],
            inputs[held_out],
            labels[held_out],
            max_rounds=config.max_rounds,
            patience=config.patience,
            batch_size=config.batch_size,
            seed_parts=(config.seed, "single-model"),
        )
    return SingleModel(network, outcome)
