"""Serving the ensemble, the single-model baseline, and membership p-values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifacts import LocalArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    membership_p_values,
    single_model_baseline,
    train_shard,
)
from models.sisa.classifier import softmax_outputs

CONFIG = SisaConfig(
    shards=2, slices=3, input_dim=5, num_classes=2, hidden=(16,), epochs=10, batch_size=16
)


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes: learnable, but not perfectly."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, CONFIG.input_dim)).astype(np.float32)
    x[:, 0] += 1.5 * y
    return x, y


def trained_ensemble(x: np.ndarray, y: np.ndarray, root: Path) -> Ensemble:
    store = LocalArtifactStore(root)
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(CONFIG.shards)}
    for i, (row, label) in enumerate(zip(x, y, strict=True)):
        key = f"r{i}"
        by_shard[assign_shard(f"s{i}", CONFIG)].append(
            TrainingRecord(key, assign_slice(key, CONFIG), row, int(label))
        )
    results = [train_shard(CONFIG, s, by_shard[s], store) for s in range(CONFIG.shards)]
    return Ensemble.load(CONFIG, Manifest.from_results(results), store)


def test_ensemble_averages_shard_probabilities(tmp_path: Path) -> None:
    x, y = blobs(300, 0)
    ensemble = trained_ensemble(x, y, tmp_path)
    test_x, test_y = blobs(200, 1)
    probabilities = ensemble.predict_proba(test_x)
    expected = np.mean([softmax_outputs(m, test_x) for m in ensemble.members.values()], axis=0)
    np.testing.assert_allclose(probabilities, expected)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert ensemble.shards == [0, 1]
    assert ensemble.accuracy(test_x, test_y) > 0.65
    np.testing.assert_array_equal(ensemble.predict(test_x), probabilities.argmax(axis=1))


def test_single_model_baseline_learns_and_is_deterministic() -> None:
    x, y = blobs(300, 0)
    test_x, test_y = blobs(200, 1)
    first = single_model_baseline(CONFIG, x, y)
    second = single_model_baseline(CONFIG, x, y)
    assert first.accuracy(test_x, test_y) > 0.65
    np.testing.assert_array_equal(first.predict_proba(test_x), second.predict_proba(test_x))


def test_non_members_get_roughly_uniform_p_values(tmp_path: Path) -> None:
    x, y = blobs(300, 0)
    ensemble = trained_ensemble(x, y, tmp_path)
    calibration_x, calibration_y = blobs(400, 2)
    probe_x, probe_y = blobs(400, 3)
    p = np.array(membership_p_values(ensemble, probe_x, probe_y, calibration_x, calibration_y))
    assert ((p > 0) & (p <= 1)).all()
    assert abs(p.mean() - 0.5) < 0.06
    # Kolmogorov-Smirnov distance to the uniform distribution; 0.1 is far above chance at n=400.
    grid = np.sort(p)
    assert np.max(np.abs(grid - np.arange(1, len(grid) + 1) / len(grid))) < 0.1


def test_memorised_training_records_get_smaller_p_values(tmp_path: Path) -> None:
    # Random labels can only be memorised: members' losses sit below most non-members'.
    rng = np.random.default_rng(5)

    def noise(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.normal(size=(n, CONFIG.input_dim)).astype(np.float32), rng.integers(0, 2, n)

    x, y = noise(80)
    # The fixed schedule: early stopping would (rightly) refuse to memorise random labels.
    overfit = SisaConfig.from_dict(
        {**CONFIG.to_dict(), "hidden": [128, 64], "epochs": 150, "validation_fraction": 0.0}
    )
    model = single_model_baseline(overfit, x, y)
    assert model.accuracy(x, y) == 1.0
    calibration_x, calibration_y = noise(200)
    probe_x, probe_y = noise(80)
    members = np.array(membership_p_values(model, x, y, calibration_x, calibration_y))
    others = np.array(membership_p_values(model, probe_x, probe_y, calibration_x, calibration_y))
    assert members.mean() < 0.35
    assert members.mean() < others.mean() - 0.15


def test_p_values_need_non_members(tmp_path: Path) -> None:
    x, y = blobs(40, 0)
    ensemble = trained_ensemble(x, y, tmp_path)
    with pytest.raises(ValueError):
        membership_p_values(ensemble, x[:3], y[:3], x[:0], y[:0])
