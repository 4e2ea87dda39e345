"""Budget calibration: rank, coverage over many splits, and inf handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.conformal import calibrate_budget, min_budget_calibration_size


def test_conformal_rank_is_exact() -> None:
    rng = np.random.default_rng(0)
    rounds = [float(v) for v in rng.permutation(19)]  # 0..18, distinct
    # ⌈20 · 0.9⌉ = 18th smallest = 17; ⌈20 · 0.95⌉ = 19th smallest = 18 (float 0.95·20 is fine).
    assert calibrate_budget(rounds, 0.1, 100).budget == 17
    b = calibrate_budget(rounds, 0.05, 100)
    assert b.certified and b.budget == 18 and b.empirical_coverage == 1.0
    short = calibrate_budget(rounds[:-1], 0.05, 100)
    assert not short.certified and short.budget is None
    assert short.reason == "only 18 calibration probes; at least 19 are needed for α_B=0.05"
    assert min_budget_calibration_size(0.05) == 19
    assert min_budget_calibration_size(0.1) == 9


def test_coverage_over_random_splits() -> None:
    """P(R_{n+1} ≤ B) ≥ 1 − α_B on average over calibration draws.

    R is geometric (acceptance chance 5 % per round), so values rarely tie and an off-by-one
    rank would lose about 1/(n+1) = 5 points of coverage, far more than the tolerance.
    """
    n, alpha_b, p_accept, tried = 19, 0.1, 0.05, 400
    coverages = []
    for split in range(2000):
        rng = np.random.default_rng([42, split])
        rounds = rng.geometric(p_accept, n) - 1.0
        rounds[rounds > tried] = math.inf
        result = calibrate_budget(list(rounds), alpha_b, max_budget=tried)
        assert result.certified and result.budget is not None
        coverages.append(1.0 - (1.0 - p_accept) ** (result.budget + 1))  # exact P(R ≤ B)
    mean, se = float(np.mean(coverages)), float(np.std(coverages) / math.sqrt(len(coverages)))
    assert mean >= 1 - alpha_b - 3 * se
    # Not vacuous: close to the k/(n+1) = 0.9 the theory gives for continuous R.
    assert mean <= 1 - alpha_b + 1 / (n + 1)


def test_inf_handling() -> None:
    # 5 of 100 never accepted: the 91st smallest is still finite.
    rounds = [float(i % 4) for i in range(95)] + [math.inf] * 5
    ok = calibrate_budget(rounds, 0.1, max_budget=5)
    assert ok.certified and ok.budget == 3
    assert ok.empirical_coverage == pytest.approx(0.95)
    # 20 of 100 never accepted: the calibrated value would be inf.
    bad = calibrate_budget([1.0] * 80 + [math.inf] * 20, 0.1, max_budget=5)
    assert not bad.certified and bad.budget is None and bad.empirical_coverage is None
    assert (
        bad.reason
        == "only 80 of 100 calibration probes were ever accepted; 91 are needed for α_B=0.1"
    )


def test_budget_above_cap_is_refused() -> None:
    result = calibrate_budget([7.0] * 50, 0.1, max_budget=5)
    assert not result.certified and result.budget is None
    assert result.reason is not None and "above the allowed maximum of 5" in result.reason


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [-1.0], [0.5]])
def test_invalid_rounds(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        calibrate_budget(bad * 20, 0.1, max_budget=5)
