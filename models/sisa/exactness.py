"""The determinism check: is a stored checkpoint bit for bit what training from scratch gives?"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from models.artifacts import ArtifactStore
from models.sisa.checkpoints import load_checkpoint
from models.sisa.config import SisaConfig
from models.sisa.records import TrainingRecord
from models.sisa.training import train_shard_in_memory

__all__ = ["ExactnessCheck", "compare_states", "verify_bit_exact"]


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


def verify_bit_exact(
    config: SisaConfig,
    shard: int,
    retained_records: Sequence[TrainingRecord],
    checkpoint_id: str,
    store: ArtifactStore,
) -> ExactnessCheck:
    """Retrain ``shard`` from scratch on ``retained_records`` (no cache, nothing written) and
    compare every model and optimizer tensor with the stored ``checkpoint_id``.

    Also checks that ``checkpoint_id`` is the content address of exactly these records: a
    checkpoint that matches numerically but claims other data would be a mislabelled lineage.
    """
    started = time.perf_counter()
    stored = load_checkpoint(store, checkpoint_id)
    fresh = train_shard_in_memory(config, shard, retained_records)
    mismatched: list[str] = []
    if fresh.result.final_checkpoint != checkpoint_id:
        mismatched.append("checkpoint_id")
    model_count, model_bad = compare_states(fresh.model.state_dict(), stored.model_state, "model")
    optim_count, optim_bad = compare_states(
        fresh.optimizer.state_dict(), stored.optimizer_state, "optimizer"
    )
    mismatched += model_bad + optim_bad
    return ExactnessCheck(
        bit_exact=not mismatched,
        tensors_compared=model_count + optim_count,
        mismatched=mismatched,
        seconds=time.perf_counter() - started,
    )
