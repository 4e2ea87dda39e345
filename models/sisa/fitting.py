"""The inner training loops: a fixed number of epochs, or until the validation loss stops
improving. Every random draw is seeded from its coordinates, never from a running generator."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from models.sisa.config import SisaConfig
from models.slicing.determinism import seeded_generator

__all__ = [
    "MIN_IMPROVEMENT",
    "MIN_STEPS_PER_ROUND",
    "EarlyStoppingOutcome",
    "build_optimizer",
    "fit_epochs",
    "fit_with_early_stopping",
    "validation_metrics",
]

# A validation loss must drop by more than this to count as an improvement: without a margin,
# ever smaller gains on a well-fitted shard would keep training until the epoch cap.
MIN_IMPROVEMENT = 1e-4
# Early stopping looks at the validation loss once per round of whole epochs with at least this
# many optimizer steps. Counting in epochs alone would judge a small shard (one or two steps an
# epoch) after a handful of steps, long before the loss could have moved.
MIN_STEPS_PER_ROUND = 20


def build_optimizer(config: SisaConfig, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate)


def fit_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed_parts: tuple[int | str, ...],
) -> None:
    """Mini-batch cross-entropy training; epoch ``e`` shuffles with a generator seeded by
    ``(*seed_parts, e)`` alone, so the data order never depends on what ran before."""
    n = len(y)
    if n == 0:
        return
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=seeded_generator("shuffle", *seed_parts, epoch))
        xs, ys = x[order], y[order]
        for start in range(0, n, batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(
                model(xs[start : start + batch_size]), ys[start : start + batch_size]
            )
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def validation_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on a non-empty validation set."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).double().mean())
    return loss, accuracy


@dataclass(frozen=True)
class EarlyStoppingOutcome:
    epochs_run: int
    best_epoch: int
    """Epochs of training kept: the model is the one after this many epochs (0: the incoming
    model was never beaten on validation)."""
    validation_loss: float | None
    validation_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_with_early_stopping(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    validation_x: torch.Tensor,
    validation_y: torch.Tensor,
    *,
    max_rounds: int,
    patience: int,
    batch_size: int,
    seed_parts: tuple[int | str, ...],
) -> EarlyStoppingOutcome:
    """Train round by round (see ``MIN_STEPS_PER_ROUND``) while the validation loss improves;
    stop after ``patience`` rounds without improvement (or ``max_rounds``) and restore the best
    round's model *and* optimizer.

    The incoming model is the first candidate, so adding a slice never makes the validation loss
    worse. Everything here is a function of the inputs, which is what lets a resumed retrain
    recompute the same stopping epoch as training from scratch.
    """
    if len(validation_y) == 0:
        raise ValueError("early stopping needs at least one validation record")
    best_loss, best_accuracy = validation_metrics(model, validation_x, validation_y)
    best_epoch, epochs_run, since_best = 0, 0, 0
    best_model = copy.deepcopy(model.state_dict())
    best_optimizer = copy.deepcopy(optimizer.state_dict())
    if len(y) == 0:
        return EarlyStoppingOutcome(0, 0, best_loss, best_accuracy)
    steps_per_epoch = math.ceil(len(y) / batch_size)
    epochs_per_round = max(1, math.ceil(MIN_STEPS_PER_ROUND / steps_per_epoch))
    for round_index in range(max_rounds):
        fit_epochs(
            model,
            optimizer,
            x,
            y,
            epochs=epochs_per_round,
            batch_size=batch_size,
            seed_parts=(*seed_parts, round_index),
        )
        epochs_run += epochs_per_round
        loss, accuracy = validation_metrics(model, validation_x, validation_y)
        if loss < best_loss - MIN_IMPROVEMENT:
            best_loss, best_accuracy, best_epoch, since_best = loss, accuracy, epochs_run, 0
            best_model = copy.deepcopy(model.state_dict())
            best_optimizer = copy.deepcopy(optimizer.state_dict())
        else:
            since_best += 1
            if since_best >= patience:
                break
    model.load_state_dict(best_model)
    optimizer.load_state_dict(best_optimizer)
    return EarlyStoppingOutcome(epochs_run, best_epoch, best_loss, best_accuracy)
