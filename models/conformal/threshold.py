"""Verifier threshold λ by Learn-then-Test with fixed-sequence testing.

A response is flagged when its leak score s ≥ λ. The risk controlled is the miss rate: the share
of truly leaking responses (labelled by the oracle) that score below λ and are let through. It
only grows with λ, so the nulls H0_λ: "miss rate(λ) > α" are tested from the lowest λ upward at
full level δ each, stopping at the first one that cannot be rejected. Fixed-sequence testing
controls the family-wise error at δ without a Bonferroni split because the order is fixed before
the data are seen, which is what makes the largest rejected λ safe to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from models.conformal.pvalues import (
    binomial_tail_p_values,
    check_level,
    clopper_pearson_upper,
    hoeffding_bentkus_p_values,
    min_calibration_size,
)
from models.conformal.types import Numbers

Method = Literal["binomial", "hb"]

# 0.00, 0.01, …, 1.00: fine enough that the miss rate moves little between steps, and coarse
# enough that a DPO can read the threshold.
DEFAULT_GRID: tuple[float, ...] = tuple(i / 100 for i in range(101))


@dataclass(frozen=True)
class ThresholdCalibration:
    """Outcome of calibrating λ. When `certified` is False, `threshold` is None and `reason`
    says why; the statistics that only make sense at a chosen λ are then None as well."""

    certified: bool
    threshold: float | None
    alpha: float
    delta: float
    n: int
    misses: int | None
    empirical_miss_rate: float | None
    miss_rate_upper_bound: float | None
    p_value: float | None
    reason: str | None
    method: Method
    min_calibration_size: int


def as_scores(scores: Numbers, what: str) -> NDArray[np.float64]:
    """Scores as a 1-D float array; anything outside [0, 1] or non-finite is a caller bug."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of numbers")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(f"{what} must be finite and lie in [0, 1]")
    return arr


def _as_grid(grid: Numbers | None) -> NDArray[np.float64]:
    # Sorting is data-independent, so it does not spoil the fixed-sequence order.
    arr = np.unique(np.asarray(DEFAULT_GRID if grid is None else grid, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError("grid must be a non-empty flat sequence of finite numbers")
    return arr


def false_flag_rate(negative_scores: Numbers, threshold: float) -> float:
    """Share of non-leaking responses (on retained subjects) the verifier would flag at λ."""
    scores = as_scores(negative_scores, "negative_scores")
    if scores.size == 0:
        raise ValueError("negative_scores must not be empty")
    return float(np.mean(scores >= threshold))


@dataclass(frozen=True)
class _Calibration:
    """What every outcome of one calibration reports, certified or not."""

    alpha: float
    delta: float
    n: int
    method: Method
    needed: int


def calibrate_threshold(
    positive_scores: Numbers,
    alpha: float,
    delta: float,
    grid: Numbers | None = None,
    method: Method = "binomial",
) -> ThresholdCalibration:
    """Largest λ on the grid with P(miss rate(λ) ≤ α) ≥ 1 − δ over the calibration draw.

    `positive_scores` are the verifier scores of calibration responses the oracle judged to
    leak. Returns an uncertified result, never a fallback number, when the data cannot
    support (α, δ).
    """
    check_level("alpha", alpha)
    check_level("delta", delta)
    if method not in ("binomial", "hb"):
        raise ValueError(f"method must be 'binomial' or 'hb', got {method!r}")
    scores = as_scores(positive_scores, "positive_scores")
    lambdas = _as_grid(grid)
    n = int(scores.size)
    calibration = _Calibration(alpha, delta, n, method, min_calibration_size(alpha, delta))
    if n < calibration.needed:
        # Even zero misses could not reject at level δ, so say so rather than fail on the grid.
        return _refused(
            calibration,
            f"only {n} calibration examples; at least {calibration.needed} are needed "
            f"for α={alpha:g}, δ={delta:g}",
        )

    # Misses at λ: positives with s < λ, i.e. the insertion point of λ in the sorted scores.
    misses = np.searchsorted(np.sort(scores), lambdas, side="left")
    if method == "binomial":
        p_values = binomial_tail_p_values(misses, n, alpha)
    else:
        p_values = hoeffding_bentkus_p_values(misses / n, n, alpha)
    run = _rejected_run(p_values, delta, int(lambdas.size))
    if run == 0:
        return _refused(
            calibration,
            f"no threshold on the grid can be certified: at the lowest threshold "
            f"λ={lambdas[0]:g}, {int(misses[0])} of {n} leaking examples scored below it "
            f"(p={p_values[0]:.3g} > δ={delta:g})",
            p_value=float(p_values[0]),
        )
    best = run - 1
    return _certified(calibration, float(lambdas[best]), int(misses[best]), float(p_values[best]))


def _rejected_run(p_values: NDArray[np.float64], delta: float, size: int) -> int:
    """How many λ from the lowest up are rejected without a break."""
    rejected = p_values <= delta
    # Fixed sequence: only the unbroken run of rejections from the lowest λ counts.
    return size if bool(rejected.all()) else int(np.argmin(rejected))


def _refused(
    calibration: _Calibration, reason: str, p_value: float | None = None
) -> ThresholdCalibration:
    return ThresholdCalibration(
        certified=False,
        threshold=None,
        alpha=calibration.alpha,
        delta=calibration.delta,
        n=calibration.n,
        misses=None,
        empirical_miss_rate=None,
        miss_rate_upper_bound=None,
        p_value=p_value,
        reason=reason,
        method=calibration.method,
        min_calibration_size=calibration.needed,
    )


def _certified(
    calibration: _Calibration, threshold: float, misses: int, p_value: float
) -> ThresholdCalibration:
    n = calibration.n
    return ThresholdCalibration(
        certified=True,
        threshold=threshold,
        alpha=calibration.alpha,
        delta=calibration.delta,
        n=n,
        misses=misses,
        empirical_miss_rate=misses / n,
        # Reported for the record: an exact bound for this one λ, ≤ α whenever the test passed
        # (the HB p-value is never below the binomial one). It is not simultaneous over the
        # grid; the certified statement is "miss rate ≤ α".
        miss_rate_upper_bound=clopper_pearson_upper(misses, n, calibration.delta),
        p_value=p_value,
        reason=None,
        method=calibration.method,
        min_calibration_size=calibration.needed,
    )
