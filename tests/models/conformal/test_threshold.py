"""Threshold calibration: statistical validity over many splits, and the honesty rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from models.conformal import (
    DEFAULT_GRID,
    binomial_tail_p_values,
    calibrate_threshold,
    false_flag_rate,
    min_calibration_size,
)

N_SPLITS = 500
N_TEST = 20_000


def _violations(alpha: float, delta: float, n: int, seed: int) -> dict[str, int]:
    """Splits in which the realised test miss rate at the calibrated λ exceeds α.

    "naive" picks the largest λ whose *empirical* miss rate is ≤ α, with no correction: it is
    the control that shows this test can fail.
    """
    grid = np.asarray(DEFAULT_GRID)
    counts = {"binomial": 0, "hb": 0, "naive": 0}
    for split in range(N_SPLITS):
        rng = np.random.default_rng([seed, split])
        cal = rng.beta(5, 2, n)  # verifier scores of truly leaking responses
        test = rng.beta(5, 2, N_TEST)
        for method in ("binomial", "hb"):
            cal_result = calibrate_threshold(cal, alpha, delta, method=method)
            assert cal_result.certified and cal_result.threshold is not None
            counts[method] += int(np.mean(test < cal_result.threshold) > alpha)
        emp = np.searchsorted(np.sort(cal), grid) / n
        naive = float(grid[emp <= alpha].max())
        counts["naive"] += int(np.mean(test < naive) > alpha)
    return counts


@pytest.mark.parametrize(("alpha", "delta", "n"), [(0.1, 0.05, 200), (0.2, 0.1, 100)])
def test_miss_rate_guarantee_holds_over_random_splits(alpha: float, delta: float, n: int) -> None:
    counts = _violations(alpha, delta, n, seed=int(alpha * 1000 + delta * 100))
    # Violations should be Binomial(N_SPLITS, ≤ δ); allow its one-sided 99.9 % quantile.
    tolerance = int(binom.ppf(0.999, N_SPLITS, delta))
    assert counts["binomial"] <= tolerance, counts
    assert counts["hb"] <= tolerance, counts
    # The uncorrected empirical rule breaks the guarantee about half the time: the check bites.
    assert counts["naive"] > 3 * tolerance, counts


def test_threshold_is_not_vacuous_and_false_flags_are_reported() -> None:
    rng = np.random.default_rng(7)
    pos, neg = rng.beta(5, 2, 300), rng.beta(2, 5, 2000)
    result = calibrate_threshold(pos, 0.1, 0.05)
    assert result.certified and result.threshold is not None
    assert min(DEFAULT_GRID) < result.threshold < max(DEFAULT_GRID)
    assert result.misses is not None and result.empirical_miss_rate == result.misses / 300
    assert result.empirical_miss_rate <= 0.1
    assert result.miss_rate_upper_bound is not None
    assert result.empirical_miss_rate < result.miss_rate_upper_bound <= 0.1
    assert result.p_value is not None and result.p_value <= 0.05
    # Largest passing λ: the next grid step up must fail the test.
    step = DEFAULT_GRID.index(result.threshold) + 1
    k_next = int(np.sum(pos < DEFAULT_GRID[step]))
    assert binomial_tail_p_values([k_next], 300, 0.1)[0] > 0.05
    ffr = false_flag_rate(neg, result.threshold)
    assert ffr == np.mean(neg >= result.threshold)
    assert 0.0 < ffr < 0.5


def test_hb_is_never_looser_than_binomial() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        pos = rng.beta(5, 2, 150)
        exact = calibrate_threshold(pos, 0.1, 0.1)
        hb = calibrate_threshold(pos, 0.1, 0.1, method="hb")
        assert exact.threshold is not None
        assert hb.threshold is None or hb.threshold <= exact.threshold


def test_small_n_gives_no_guarantee_with_reason() -> None:
    result = calibrate_threshold([0.9] * 12, 0.1, 0.05)
    assert not result.certified
    assert result.threshold is None and result.empirical_miss_rate is None
    assert result.reason == "only 12 calibration examples; at least 29 are needed for α=0.1, δ=0.05"
    empty = calibrate_threshold([], 0.1, 0.05)
    assert not empty.certified and empty.reason is not None and "only 0" in empty.reason


@pytest.mark.parametrize("method", ["binomial", "hb"])
def test_boundary_sample_size(method: str) -> None:
    needed = min_calibration_size(0.1, 0.05)
    scores = [0.95] * needed  # no misses at any λ ≤ 0.95
    grid = [0.5, 0.9, 0.95, 0.96]
    below = calibrate_threshold(scores[:-1], 0.1, 0.05, grid=grid, method=method)  # type: ignore[arg-type]
    assert not below.certified and below.reason is not None and "at least 29" in below.reason
    if method == "binomial":
        at = calibrate_threshold(scores, 0.1, 0.05, grid=grid)
        assert at.certified and at.threshold == 0.95 and at.misses == 0
        assert at.p_value == pytest.approx(0.9**29)
    # An exactly-integer bound: ln 0.25 / ln 0.5 = 2, so two positives suffice.
    assert calibrate_threshold([0.8, 0.9], 0.5, 0.25, grid=[0.5]).certified
    assert not calibrate_threshold([0.8], 0.5, 0.25, grid=[0.5]).certified


def test_no_grid_point_passing_gives_no_guarantee() -> None:
    rng = np.random.default_rng(11)
    pos = rng.uniform(0, 1, 200)  # 30 % of positives below the lowest grid point
    result = calibrate_threshold(pos, 0.1, 0.05, grid=[0.3, 0.5, 0.7])
    assert not result.certified and result.threshold is None
    assert result.reason is not None and result.reason.startswith("no threshold on the grid")
    assert result.p_value is not None and result.p_value > 0.05


def test_grid_order_does_not_matter_and_inputs_are_checked() -> None:
    rng = np.random.default_rng(5)
    pos = rng.beta(5, 2, 100)
    grid = [i / 20 for i in range(21)]
    assert (
        calibrate_threshold(pos, 0.2, 0.1, grid=grid).threshold
        == calibrate_threshold(pos, 0.2, 0.1, grid=grid[::-1]).threshold
    )
    for bad in ([0.5, float("nan")], [1.2], [-0.1]):
        with pytest.raises(ValueError):
            calibrate_threshold(bad * 50, 0.1, 0.05)
    with pytest.raises(ValueError):
        calibrate_threshold(pos, 0.0, 0.05)
    with pytest.raises(ValueError):
        calibrate_threshold(pos, 0.1, 0.05, method="bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        false_flag_rate([], 0.5)
