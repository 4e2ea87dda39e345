"""Regeneration budget B by split conformal prediction on rounds-to-acceptance.

Each calibration probe records how many refinement rounds it needed before the verifier
accepted an answer (math.inf if it was never accepted within the rounds tried). With the
⌈(n+1)(1−α_B)⌉-th smallest value as B, a new exchangeable query is accepted within B rounds
with probability at least 1 − α_B (marginally, over calibration and query together); ties only
make this more conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

from models.conformal.pvalues import check_level
from models.conformal.types import Numbers


@dataclass(frozen=True)
class BudgetCalibration:
    """Outcome of calibrating B. When `certified` is False, `budget` is None and `reason`
    says why."""

    certified: bool
    budget: int | None
    alpha_b: float
    n: int
    empirical_coverage: float | None
    reason: str | None
    max_budget: int


def _conformal_rank(n: int, alpha_b: float) -> int:
    # Exact rational arithmetic: (n+1)(1−α_B) is often an integer on paper (n=19, α_B=0.05)
    # and float rounding would push the ceiling one rank up or down.
    return math.ceil((n + 1) * (1 - Fraction(alpha_b)))


def min_budget_calibration_size(alpha_b: float) -> int:
    """Smallest n with ⌈(n+1)(1−α_B)⌉ ≤ n, i.e. n ≥ (1−α_B)/α_B."""
    check_level("alpha_b", alpha_b)
    a = Fraction(alpha_b)
    return max(1, math.ceil((1 - a) / a))


def _as_rounds(rounds: Numbers) -> NDArray[np.float64]:
    arr = np.asarray(rounds, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError("rounds_to_acceptance must be a flat sequence")
    finite = arr[np.isfinite(arr)]
    if np.any(np.isnan(arr)) or np.any(arr < 0) or np.any(finite != np.floor(finite)):
        raise ValueError("rounds_to_acceptance must be non-negative whole numbers or math.inf")
    return arr


def calibrate_budget(
    rounds_to_acceptance: Numbers, alpha_b: float, max_budget: int
) -> BudgetCalibration:
    """B such that P(R_{n+1} ≤ B) ≥ 1 − α_B under exchangeability, if B ≤ max_budget.

    Probes recorded as math.inf must have been tried for at least `max_budget` rounds, or the
    budget cannot be judged against that cap.
    """
    check_level("alpha_b", alpha_b)
    if isinstance(max_budget, bool) or not isinstance(max_budget, int) or max_budget < 0:
        raise ValueError(f"max_budget must be a non-negative integer, got {max_budget!r}")
    rounds = np.sort(_as_rounds(rounds_to_acceptance))
    n = int(rounds.size)
    rank = _conformal_rank(n, alpha_b)

    def refuse(reason: str) -> BudgetCalibration:
        return BudgetCalibration(False, None, alpha_b, n, None, reason, max_budget)

    if rank > n:
        needed = min_budget_calibration_size(alpha_b)
        return refuse(
            f"only {n} calibration probes; at least {needed} are needed for α_B={alpha_b:g}"
        )
    value = float(rounds[rank - 1])
    if math.isinf(value):
        accepted = int(np.sum(np.isfinite(rounds)))
        return refuse(
            f"only {accepted} of {n} calibration probes were ever accepted; "
            f"{rank} are needed for α_B={alpha_b:g}"
        )
    if value > max_budget:
        return refuse(
            f"the calibrated budget would be {int(value)} rounds, "
            f"above the allowed maximum of {max_budget}"
        )
    budget = int(value)
    return BudgetCalibration(
        certified=True,
        budget=budget,
        alpha_b=alpha_b,
        n=n,
        empirical_coverage=float(np.mean(rounds <= budget)),
        reason=None,
        max_budget=max_budget,
    )
