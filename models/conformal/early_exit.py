"""Calibrated early exit: refuse a flagged answer at once when refinement is predicted to fail.

Refinement regenerates a flagged answer up to B rounds; when it will not find an acceptable
answer anyway, those rounds are wasted. The exit refuses at once when the first answer's exit
score (by default its verifier score) is above a threshold τ. The risk is refusing a query that
refinement *would have rescued* within the maximum budget, so τ is set on the calibration
probes refinement did rescue (run with the maximum budget, exit disabled):

    τ = s_(k), the k-th smallest exit score of the n rescued probes, with the smallest k such
    that P(Binomial(n, 1 − α_B) ≥ k) ≤ δ.

Then, with probability ≥ 1 − δ over the calibration draw, P(score > τ | rescuable) ≤ α_B for
an exchangeable future query (a training-conditional, "PAC" split-conformal bound: the coverage
of s_(k) is Beta(k, n − k + 1) for continuous scores; ties only raise it). Even k = n needs
(1 − α_B)^n ≤ δ, i.e. n ≥ ln δ / ln(1 − α_B); below that the result is uncertified and no exit
may be used. The compute it saves is measured, not guaranteed: the share of calibration probes
refinement failed on whose score is above τ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.conformal.pvalues import binomial_tail_p_values, check_level, min_calibration_size
from models.conformal.threshold import as_scores
from models.conformal.types import Numbers


@dataclass(frozen=True)
class ExitCalibration:
    """Outcome of calibrating the exit. When `certified` is False, `threshold` is None (never
    exit) and `reason` says why."""

    certified: bool
    threshold: float | None
    alpha_b: float
    delta: float
    # Rescued calibration probes (the population the guarantee is about).
    n: int
    # Probes refinement did not rescue within the maximum budget (what the exit saves on).
    n_unrescued: int
    min_calibration_size: int
    # Rescued calibration probes above τ (would have been refused), and the share of
    # unrescued ones above τ (the in-sample estimate of the saving; not part of the guarantee).
    rescued_refused: int | None
    unrescued_exit_rate: float | None
    reason: str | None


def calibrate_exit(
    rescued_scores: Numbers, unrescued_scores: Numbers, alpha_b: float, delta: float
) -> ExitCalibration:
    """τ such that P(refusing a rescuable query) ≤ α_B with probability ≥ 1 − δ (see above).

    Scores must lie in [0, 1] (verifier scores); refuse at once when score > τ."""
    check_level("alpha_b", alpha_b)
    check_level("delta", delta)
    rescued = np.sort(as_scores(rescued_scores, "rescued_scores"))
    unrescued = as_scores(unrescued_scores, "unrescued_scores")
    n = int(rescued.size)
    # Zero rescued probes above τ certifies exactly when (1 − α_B)^n ≤ δ: the same bound as
    # LTT's with zero misses, so the same helper gives it.
    needed = min_calibration_size(alpha_b, delta)

    def refuse(reason: str) -> ExitCalibration:
        return ExitCalibration(
            False, None, alpha_b, delta, n, int(unrescued.size), needed, None, None, reason
        )

    if n < needed:
        return refuse(
            f"only {n} calibration probes that refinement rescued; at least {needed} are "
            f"needed for α_B={alpha_b:g}, δ={delta:g}"
        )
    # j = n − k rescued probes may lie above τ; P(Bin(n, 1−α) ≥ k) = P(Bin(n, α) ≤ j).
    allowed = np.arange(n + 1)
    ok = binomial_tail_p_values(allowed, n, alpha_b) <= delta
    j = int(np.max(allowed[ok]))
    k = n - j
    tau = float(rescued[k - 1])
    above = int(np.sum(rescued > tau))
    saving = float(np.mean(unrescued > tau)) if unrescued.size else None
    return ExitCalibration(
        True, tau, alpha_b, delta, n, int(unrescued.size), needed, above, saving, None
    )


def should_exit(calibration: ExitCalibration | None, score: float) -> bool:
    """Refuse at once? Never without a certified calibration."""
    return (
        calibration is not None
        and calibration.certified
        and calibration.threshold is not None
        and score > calibration.threshold
    )
