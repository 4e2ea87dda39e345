"""The `conformal_risk` / `no_guarantee` certificate as a JSON-able dict for the audit log."""

from __future__ import annotations

from typing import Literal, TypedDict

from models.conformal.budget import BudgetCalibration
from models.conformal.early_exit import ExitCalibration
from models.conformal.threshold import ThresholdCalibration

CertificateKind = Literal["conformal_risk", "no_guarantee"]
# Which rule decides when refinement gives up, in force for this rule-set version.
RefinementRule = Literal["early_exit", "conformal_budget", "max_budget"]

# The plain-words limits of the guarantee, stated in every certificate so that whoever reads
# one sees what it does not claim.
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
    refinement_rule: RefinementRule
    refinement_guarantee: str
    exit_certified: bool | None
    exit_threshold: float | None
    exit_alpha_b: float | None
    exit_delta: float | None
    exit_n: int | None
    exit_min_calibration_size: int | None
    exit_rescued_refused: int | None
    exit_unrescued_exit_rate: float | None
    exit_reason: str | None
    assumptions: list[str]


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def exit_in_force(exit_cal: ExitCalibration | None) -> bool:
    return (
        exit_cal is not None
        and exit_cal.certified
        and exit_cal.threshold is not None
        and exit_cal.threshold < 1.0
    )


def refinement_rule(
    budget_cal: BudgetCalibration | None, exit_cal: ExitCalibration | None
) -> tuple[RefinementRule, str]:
    """The rule in force and its guarantee in words; only certified calibrations count, and an
    exit whose threshold no verifier score exceeds (τ ≥ 1) is not in force: it never fires."""
    if exit_in_force(exit_cal):
        assert exit_cal is not None and exit_cal.threshold is not None
        cap = f"{budget_cal.budget}" if budget_cal and budget_cal.certified else "the maximum"
        return "early_exit", (
            f"A flagged first answer whose verifier score is above {exit_cal.threshold:g} is "
            f"refused at once unless back-off rescues it; others are regenerated up to {cap} "
            f"rounds. With probability at least {_pct(1 - exit_cal.delta)} over the "
            f"calibration, at most "
            f"{_pct(exit_cal.alpha_b)} of queries that refinement would have rescued within "
            f"the maximum budget are refused by this exit (from {exit_cal.n} rescued "
            "calibration probes; the rounds it saves are measured, not guaranteed)."
        )
    if budget_cal is not None and budget_cal.certified and budget_cal.budget is not None:
        return "conformal_budget", (
            f"A flagged answer is regenerated at most {budget_cal.budget} rounds; at least "
            f"{_pct(1 - budget_cal.alpha_b)} of flagged answers refinement handles are expected "
            "to be accepted within them, backed off (sentences carrying the leak dropped) or "
            "regenerated (marginal split-conformal guarantee)."
        )
    return "max_budget", (
        "No refinement rule is certified: a flagged answer is regenerated up to the policy's "
        "maximum budget, then refused; nothing about refusals is guaranteed."
    )


def build_certificate(
    threshold_cal: ThresholdCalibration,
    budget_cal: BudgetCalibration | None,
    *,
    false_flag_rate: float | None,
    rule_set_version: int | str,
    assumptions: list[str] | None = None,
    exit_cal: ExitCalibration | None = None,
) -> ConformalCertificate:
    """Certificate for one rule-set version. Its kind follows the threshold alone: the miss
    rate is the leakage guarantee, while B and the early exit only decide how often a query
    ends in a refusal. Issue it again (a new certificate) once B or the exit is calibrated."""
    if false_flag_rate is not None and not 0.0 <= false_flag_rate <= 1.0:
        raise ValueError("false_flag_rate must lie in [0, 1]")
    certified = threshold_cal.certified
    if budget_cal is None:
        budget_reason: str | None = "the regeneration budget was not calibrated"
    else:
        budget_reason = budget_cal.reason
    rule, guarantee = refinement_rule(budget_cal, exit_cal)
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
        refinement_rule=rule,
        refinement_guarantee=guarantee,
        exit_certified=None if exit_cal is None else exit_cal.certified,
        exit_threshold=None if exit_cal is None else exit_cal.threshold,
        exit_alpha_b=None if exit_cal is None else float(exit_cal.alpha_b),
        exit_delta=None if exit_cal is None else float(exit_cal.delta),
        exit_n=None if exit_cal is None else exit_cal.n,
        exit_min_calibration_size=None if exit_cal is None else exit_cal.min_calibration_size,
        exit_rescued_refused=None if exit_cal is None else exit_cal.rescued_refused,
        exit_unrescued_exit_rate=None if exit_cal is None else exit_cal.unrescued_exit_rate,
        exit_reason=None if exit_cal is None else exit_cal.reason,
        assumptions=list(DEFAULT_ASSUMPTIONS if assumptions is None else assumptions),
    )
