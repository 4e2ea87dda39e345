"""Conformal calibration for inference-time unlearning (arXiv 2602.03787).

Sets the verifier threshold λ (Learn-then-Test on the miss rate), the regeneration budget B
(split conformal on rounds to acceptance) and the early-exit threshold (training-conditional
split conformal on the probes refinement rescued), and turns them into the audit certificate.
"""

from models.conformal.budget import BudgetCalibration, calibrate_budget, min_budget_calibration_size
from models.conformal.certificate import (
    DEFAULT_ASSUMPTIONS,
    CertificateKind,
    ConformalCertificate,
    RefinementRule,
    build_certificate,
    exit_in_force,
    refinement_rule,
)
from models.conformal.describe import describe_certificate
from models.conformal.early_exit import ExitCalibration, calibrate_exit, should_exit
from models.conformal.pvalues import (
    binomial_tail_p_value,
    binomial_tail_p_values,
    clopper_pearson_upper,
    hoeffding_bentkus_p_value,
    hoeffding_bentkus_p_values,
    min_calibration_size,
)
from models.conformal.threshold import (
    DEFAULT_GRID,
    Method,
    ThresholdCalibration,
    calibrate_threshold,
    false_flag_rate,
)
from models.conformal.types import Numbers

__all__ = [
    "DEFAULT_ASSUMPTIONS",
    "DEFAULT_GRID",
    "BudgetCalibration",
    "CertificateKind",
    "ConformalCertificate",
    "ExitCalibration",
    "Method",
    "Numbers",
    "RefinementRule",
    "ThresholdCalibration",
    "binomial_tail_p_value",
    "binomial_tail_p_values",
    "build_certificate",
    "calibrate_budget",
    "calibrate_exit",
    "calibrate_threshold",
    "clopper_pearson_upper",
    "describe_certificate",
    "exit_in_force",
    "false_flag_rate",
    "hoeffding_bentkus_p_value",
    "hoeffding_bentkus_p_values",
    "min_budget_calibration_size",
    "min_calibration_size",
    "refinement_rule",
    "should_exit",
]
