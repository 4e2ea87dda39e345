"""Erasing records from a trained ensemble, checked bit for bit (the ML work of ``lethe
verify-exact``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.artifacts import LocalArtifactStore
from models.sisa import SisaConfig, TrainingRecord, assign_shard, assign_slice
from models.sisa.verify_exact import erase_and_verify, train_all_shards


def test_erase_and_verify_on_records(tmp_path: Path) -> None:
    config = SisaConfig(
        shards=2, slices=3, input_dim=4, num_classes=2, hidden=(8,), epochs=2, seed=1
    ).replace(validation_fraction=0.0)
    rng = np.random.default_rng(0)
    shard_records: dict[int, list[TrainingRecord]] = {}
    for row in range(60):
        x = rng.normal(size=4).astype(np.float32)
        record = TrainingRecord(str(row), assign_slice(str(row), config), x, int(x[0] > 0))
        shard_records.setdefault(assign_shard(f"subject-{row // 3}", config), []).append(record)
    store = LocalArtifactStore(tmp_path / "store")
    stages: list[str] = []
    trained = train_all_shards(config, shard_records, store, progress=lambda *_: None)
    outcome = erase_and_verify(
        config,
        shard_records,
        ["4", "5", "31"],
        store,
        trained.manifest,
        progress=lambda stage, done, total: stages.append(stage),
    )
    assert outcome.bit_exact
    assert sorted(outcome.checks) == sorted(outcome.unlearning.shards)
    assert outcome.unlearning.manifest != trained.manifest
    assert stages[0] == "unlearn" and stages[-1] == "verify"
