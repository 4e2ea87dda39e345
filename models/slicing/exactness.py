"""The bit-for-bit comparison every sliced trainer's check ends with: a from-scratch run's
tensors against a stored checkpoint, and that checkpoint's address against the run's."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from models.slicing.checkpoints import Checkpoint

__all__ = ["ExactnessCheck", "compare_states", "compare_with_checkpoint"]


@dataclass(frozen=True)
class ExactnessCheck:
    bit_exact: bool
    tensors_compared: int
    mismatched: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_states(expected: Any, actual: Any, path: str = "") -> tuple[int, list[str]]:
    """Walk two nested state dicts; tensors must match with ``torch.equal`` (same dtype and
    shape too), everything else with ``==``. Returns (tensors compared, mismatched paths)."""
    if isinstance(expected, torch.Tensor) or isinstance(actual, torch.Tensor):
        same = (
            isinstance(expected, torch.Tensor)
            and isinstance(actual, torch.Tensor)
            and expected.dtype == actual.dtype
            and expected.shape == actual.shape
            and torch.equal(expected, actual)
        )
        return 1, [] if same else [path]
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        compared, mismatched = 0, []
        for key in sorted(set(expected) | set(actual), key=str):
            name = f"{path}.{key}" if path else str(key)
            if key not in expected or key not in actual:
                mismatched.append(name)
                continue
            count, bad = compare_states(expected[key], actual[key], name)
            compared += count
            mismatched.extend(bad)
        return compared, mismatched
    if isinstance(expected, list | tuple) and isinstance(actual, list | tuple):
        if len(expected) != len(actual):
            return 0, [path]
        compared, mismatched = 0, []
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            count, bad = compare_states(left, right, f"{path}[{index}]")
            compared += count
            mismatched.extend(bad)
        return compared, mismatched
    return 0, [] if expected == actual else [path]


def compare_with_checkpoint(
    stored: Checkpoint,
    checkpoint: str,
    fresh_checkpoint: str,
    fresh_model: Any,
    fresh_optimizer: Any,
    *,
    model_label: str,
    started: float,
) -> ExactnessCheck:
    """Every model and optimizer tensor of a from-scratch run against ``stored`` (saved as
    ``checkpoint``), and that ``checkpoint`` is the address the run gives its own records
    (``fresh_checkpoint``): a checkpoint that matches numerically but claims other data would
    be a mislabelled lineage. ``started``: when the check began (``time.perf_counter``)."""
    mismatched: list[str] = []
    if fresh_checkpoint != checkpoint:
        mismatched.append("checkpoint_id")
    model_count, model_bad = compare_states(fresh_model, stored.model_state, model_label)
    optim_count, optim_bad = compare_states(fresh_optimizer, stored.optimizer_state, "optimizer")
    mismatched += model_bad + optim_bad
    return ExactnessCheck(
        bit_exact=not mismatched,
        tensors_compared=model_count + optim_count,
        mismatched=mismatched,
        seconds=time.perf_counter() - started,
    )
