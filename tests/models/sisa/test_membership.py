"""Membership p-values: roughly uniform for non-members, smaller for memorised training records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.sisa import (
    SisaConfig,
    membership_p_values,
    single_model_baseline,
)
from tests.support.sisa import BLOBS, blobs, trained_ensemble


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
        return rng.normal(size=(n, BLOBS.input_dim)).astype(np.float32), rng.integers(0, 2, n)

    x, y = noise(80)
    # The fixed schedule: early stopping would (rightly) refuse to memorise random labels.
    overfit = SisaConfig.from_dict(
        {**BLOBS.to_dict(), "hidden": [128, 64], "epochs": 150, "validation_fraction": 0.0}
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
