"""The `conformal_risk` / `no_guarantee` certificate as a JSON-able dict for the audit log."""

from __future__ import annotations

from typing import Literal, TypedDict

from models.conformal.budget import BudgetCalibration
from models.conformal.threshold import ThresholdCalibration

CertificateKind = Literal["conformal_risk", "no_guarantee"]

# The plain-words limits of the guarantee; DESIGN.md "What each guarantee claims".
DEFAULT_ASSUMPTIONS: tuple[str, ...] = (
    "The calibration probes are exchangeable with future queries: drawn the same way, so that "
    "no future query is systematically different from them.",
    "Leakage means leakage as judged by the labelling oracle that labelled the calibration "
    "answers.",
    "The guarantee bounds leakage as judged by the verifier; it does not delete anything from "
    "the model's weights.",
)


class ConformalCertificate(TypedDict):
    """Flat on purpose: each field is one column a report or an auditor can read directly."""

    kind: CertificateKind
    certified: bool
    reason: str | None
    rule_set_version: int | str
    method: str
    alpha: float
    delta: float
    n: int
    min_calibration_size: int
    threshold: float | None
    misses: int | None
    empirical_miss_rate: float | None
    miss_rate_upper_bound: float | None
    p_value: float | None
    budget: int | None
    alpha_b: float | None
    budget_n: int | None
    budget_max: int | None
    budget_empirical_coverage: float | None
    budget_reason: str | None
    false_flag_rate: float | None
    assumptions: list[str]


def build_certificate(
    threshold_cal: ThresholdCalibration,
    budget_cal: BudgetCalibration | None,
    *,
    false_flag_rate: float | None,
    rule_set_version: int | str,
    assumptions: list[str] | None = None,
) -> ConformalCertificate:
    """Certificate for one rule-set version. Its kind follows the threshold alone: the miss
    rate is the leakage guarantee, while B only decides how often a query ends in a refusal."""
    if false_flag_rate is not None and not 0.0 <= false_flag_rate <= 1.0:
        raise ValueError("false_flag_rate must lie in [0, 1]")
    certified = threshold_cal.certified
    if budget_cal is None:
        budget_reason: str | None = "the regeneration budget was not calibrated"
    else:
        budget_reason = budget_cal.reason
    return ConformalCertificate(
        kind="conformal_risk" if certified else "no_guarantee",
        certified=certified,
        reason=threshold_cal.reason,
        rule_set_version=rule_set_version,
        method=threshold_cal.method,
        alpha=float(threshold_cal.alpha),
        delta=float(threshold_cal.delta),
        n=threshold_cal.n,
        min_calibration_size=threshold_cal.min_calibration_size,
        threshold=threshold_cal.threshold,
        misses=threshold_cal.misses,
        empirical_miss_rate=threshold_cal.empirical_miss_rate,
        miss_rate_upper_bound=threshold_cal.miss_rate_upper_bound,
        p_value=threshold_cal.p_value,
        budget=None if budget_cal is None else budget_cal.budget,
        alpha_b=None if budget_cal is None else float(budget_cal.alpha_b),
        budget_n=None if budget_cal is None else budget_cal.n,
        budget_max=None if budget_cal is None else budget_cal.max_budget,
        budget_empirical_coverage=None if budget_cal is None else budget_cal.empirical_coverage,
        budget_reason=budget_reason,
        false_flag_rate=None if false_flag_rate is None else float(false_flag_rate),
        assumptions=list(DEFAULT_ASSUMPTIONS if assumptions is None else assumptions),
    )
