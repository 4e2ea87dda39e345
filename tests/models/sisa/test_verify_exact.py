"""Erasing records from a trained ensemble, checked bit for bit; and the experiment that
`lethe verify-exact` runs on a CSV file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.artifacts import LocalArtifactStore
from models.sisa import SisaConfig, TrainingRecord, assign_shard, assign_slice
from models.sisa.verify_exact import erase_and_verify, train_all_shards
from service.cli.verify_exact import run_verify_exact


def write_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(8, 1, rows)
    city = rng.choice(["north", "south", "east"], rows)
    score = rng.normal(size=rows) + (city == "north")
    frame = pd.DataFrame(
        {
            "customer": [f"cust-{i // 2}" for i in range(rows)],  # two records per subject
            "income": income,
            "city": city,
            "score": np.where(rng.random(rows) < 0.05, np.nan, score),
            "approved": np.where(score + 0.3 * np.log(income) > 3.0, "yes", "no"),
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_erasing_subjects_is_bit_exact(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "data.csv")
    result = run_verify_exact(
        csv, "customer", "approved", 3, 4, ["cust-3", "cust-50", "cust-77"], epochs=4
    )
    assert set(result) == {
        "bit_exact",
        "shards",
        "slices",
        "shards_retrained",
        "retrain_seconds",
        "full_retrain_seconds",
        "accuracy_before",
        "accuracy_after",
        "majority_class_accuracy",
        "schedule",
        "shards_too_small",
    }
    assert result["bit_exact"] is True
    assert (result["shards"], result["slices"]) == (3, 4)
    assert 1 <= result["shards_retrained"] <= 3
    assert result["retrain_seconds"] > 0 and result["full_retrain_seconds"] > 0
    assert 0.5 <= result["accuracy_before"] <= 1 and 0.5 <= result["accuracy_after"] <= 1


def test_unknown_column_and_subject_are_clear_errors(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "data.csv", rows=40)
    with pytest.raises(ValueError, match="unknown column 'nope'"):
        run_verify_exact(csv, "nope", "approved", 2, 2, ["cust-1"], epochs=1)
    with pytest.raises(ValueError) as error:
        run_verify_exact(csv, "customer", "approved", 2, 2, ["cust-1", "secret-person"], epochs=1)
    assert "#2" in str(error.value)
    assert "secret-person" not in str(error.value)


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
