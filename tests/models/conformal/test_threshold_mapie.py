"""Cross-check against MAPIE's Learn-then-Test implementation (mapie 1.x).

MAPIE's `BinaryClassificationController` predicts 1 ("flag") when proba ≥ λ, the same
convention as ours. Its risk is expressed here as a custom `BinaryRisk` that is exactly our miss
rate (condition y = 1, occurrence y_pred = 0), also as the built-in `recall` at target 1 − α,
with `fwer_method="fixed_sequence"`. For a 0/1 loss it passes `binary=True` to its
Hoeffding–Bentkus p-value, i.e. min(Hoeffding, P(Bin(n, α) ≤ ⌈n·r̂⌉)), which equals our exact
binomial p-value because the Hoeffding (Chernoff) bound is never below the exact tail.

Convention differences, each handled below:
- MAPIE returns as `best_predict_param` the λ minimising a secondary risk, breaking ties towards
  the *lowest* such λ; we report the largest certified grid λ. Both flag the same calibration
  responses; we compare against max(valid_predict_params), its largest certified λ.
- MAPIE rebuilds the miss count as ⌈n·r̂⌉ with r̂ = k/n in floating point. When n·(k/n) lands an
  ulp above k it counts one extra miss (a conservative, larger p-value) and can stop the fixed
  sequence early. With n a power of two k/n is exact, so there the two must agree exactly; for
  other n, MAPIE's λ is never above ours and every p-value gap is exactly that one extra miss.
- `recall` works on 1 − recall, so α = 1 − (1 − α) differs from α by an ulp; allow one grid step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.conformal import binomial_tail_p_values, calibrate_threshold, hoeffding_bentkus_p_values

mapie_rc = pytest.importorskip("mapie.risk_control")
mapie_methods = pytest.importorskip("mapie.risk_control.methods")

GRID = np.round(np.linspace(0.0, 1.0, 101), 2)
MISS_RATE = mapie_rc.BinaryRisk(
    risk_occurrence=lambda y_true, y_pred: y_pred == 0,
    risk_condition=lambda y_true, y_pred: y_true == 1,
    higher_is_better=False,
)


def _proba(scores: Any) -> Any:
    s = np.asarray(scores, dtype=float)
    return np.column_stack([1.0 - s, s])


def _mapie(pos: Any, neg: Any, alpha: float, delta: float, risk: str) -> Any:
    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(int)
    controller = mapie_rc.BinaryClassificationController(
        predict_function=_proba,
        risk=MISS_RATE if risk == "miss" else mapie_rc.recall,
        target_level=alpha if risk == "miss" else 1.0 - alpha,
        confidence_level=1.0 - delta,
        best_predict_param_choice="predicted_positive_fraction",
        list_predict_params=GRID,
        fwer_method="fixed_sequence",
    )
    return controller.calibrate(x, y)


def _largest(controller: Any) -> float | None:
    valid = controller.valid_predict_params
    return float(np.max(valid)) if len(valid) else None


@pytest.mark.parametrize(("alpha", "delta"), [(0.1, 0.05), (0.2, 0.1)])
def test_same_threshold_as_mapie_when_counts_are_exact(alpha: float, delta: float) -> None:
    for seed in range(40):
        rng = np.random.default_rng([seed, 1])
        n = [64, 128, 256][seed % 3]
        pos, neg = rng.beta(5, 2, n), rng.beta(2, 5, n)
        ours = calibrate_threshold(pos, alpha, delta, grid=list(GRID))
        miss = _mapie(pos, neg, alpha, delta, "miss")
        k = np.searchsorted(np.sort(pos), GRID, side="left")
        np.testing.assert_allclose(
            miss.p_values[:, 0], binomial_tail_p_values(k, n, alpha), rtol=1e-9
        )
        assert _largest(miss) == ours.threshold
        rec = _largest(_mapie(pos, neg, alpha, delta, "recall"))
        assert (rec is None) == (ours.threshold is None)
        if rec is not None and ours.threshold is not None:
            assert abs(rec - ours.threshold) <= 0.01 + 1e-12


def test_mapie_differs_only_by_its_rounding_for_other_n() -> None:
    alpha, delta, differing = 0.1, 0.05, 0
    for seed in range(60):
        rng = np.random.default_rng([seed, 2])
        n = int(rng.integers(40, 400))
        pos, neg = rng.beta(5, 2, n), rng.beta(2, 5, n)
        ours = calibrate_threshold(pos, alpha, delta, grid=list(GRID))
        miss = _mapie(pos, neg, alpha, delta, "miss")
        theirs = _largest(miss)
        assert ours.threshold is not None and theirs is not None
        assert theirs <= ours.threshold
        k = np.searchsorted(np.sort(pos), GRID, side="left")
        exact = binomial_tail_p_values(k, n, alpha)
        one_more = binomial_tail_p_values(np.minimum(k + 1, n), n, alpha)
        p = miss.p_values[:, 0]
        assert np.all(np.isclose(p, exact, rtol=1e-9) | np.isclose(p, one_more, rtol=1e-9))
        differing += int(theirs != ours.threshold)
    assert differing < 60  # mostly the same; the rest is the ⌈n·r̂⌉ rounding explained above


def test_hoeffding_bentkus_matches_mapie() -> None:
    n, alpha = 128, 0.1
    r_hat = np.arange(0, n + 1) / n  # dyadic, so ⌈n·r̂⌉ is exact in both
    theirs = mapie_methods.compute_hoeffding_bentkus_p_value(r_hat, n, alpha, binary=False)
    np.testing.assert_allclose(hoeffding_bentkus_p_values(r_hat, n, alpha), theirs[:, 0], rtol=1e-9)
