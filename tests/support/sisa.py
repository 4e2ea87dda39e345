"""Data for the models.sisa tests: records under a configuration that stops early (validation
split, patience), a public base, and two Gaussian classes (BLOBS) for serving and membership."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.artifacts import LocalArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    PublicBase,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    train_shard,
)

EARLY_STOPPING = SisaConfig(
    shards=2,
    slices=4,
    input_dim=6,
    num_classes=3,
    hidden=(8,),
    batch_size=8,
    seed=3,
    validation_fraction=0.25,
    patience=2,
    max_rounds=30,
)


def make_records(config: SisaConfig, count: int, seed: int = 0) -> dict[int, list[TrainingRecord]]:
    rng = np.random.default_rng(seed)
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(config.shards)}
    for i in range(count):
        x = rng.normal(size=config.input_dim).astype(np.float32)
        key = f"k{i:04d}"
        record = TrainingRecord(key, assign_slice(key, config), x, int(np.argmax(x[:3])))
        by_shard[assign_shard(f"subject-{i}", config)].append(record)
    return by_shard


def assert_states_equal(left: dict[str, torch.Tensor], right: object) -> None:
    assert isinstance(right, dict) or hasattr(right, "items")
    assert set(left) == set(right)  # type: ignore[arg-type]
    for name, tensor in left.items():
        assert torch.equal(tensor, right[name]), name  # type: ignore[index]


def make_base(bump: float = 0.0) -> PublicBase:
    generator = torch.Generator().manual_seed(5)
    network = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
    with torch.no_grad():
        network[0].weight.copy_(torch.randn(5, 6, generator=generator))
        network[0].bias.fill_(bump)
    return PublicBase(network, input_dim=6, name="test-base", provenance="random, no data")


BLOBS = SisaConfig(
    shards=2, slices=3, input_dim=5, num_classes=2, hidden=(16,), epochs=10, batch_size=16
)


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes: learnable, but not perfectly."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, BLOBS.input_dim)).astype(np.float32)
    x[:, 0] += 1.5 * y
    return x, y


def trained_ensemble(x: np.ndarray, y: np.ndarray, root: Path) -> Ensemble:
    store = LocalArtifactStore(root)
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(BLOBS.shards)}
    for i, (row, label) in enumerate(zip(x, y, strict=True)):
        key = f"r{i}"
        by_shard[assign_shard(f"s{i}", BLOBS)].append(
            TrainingRecord(key, assign_slice(key, BLOBS), row, int(label))
        )
    results = [train_shard(BLOBS, s, by_shard[s], store) for s in range(BLOBS.shards)]
    return Ensemble.load(BLOBS, Manifest.from_results(results), store)
