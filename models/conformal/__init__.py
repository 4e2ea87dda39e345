"""Conformal calibration for inference-time unlearning (arXiv 2602.03787).

Sets the verifier threshold λ (Learn-then-Test on the miss rate) and the regeneration budget B
(split conformal on rounds to acceptance), and turns both into the audit certificate.
"""

from models.conformal.budget import BudgetCalibration, calibrate_budget, min_budget_calibration_size
from models.conformal.certificate import (
    DEFAULT_ASSUMPTIONS,
    CertificateKind,
    ConformalCertificate,
    build_certificate,
)
from models.conformal.describe import describe_certificate
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
    "Method",
    "Numbers",
    "ThresholdCalibration",
    "binomial_tail_p_value",
    "binomial_tail_p_values",
    "build_certificate",
    "calibrate_budget",
    "calibrate_threshold",
    "clopper_pearson_upper",
    "describe_certificate",
    "false_flag_rate",
    "hoeffding_bentkus_p_value",
    "hoeffding_bentkus_p_values",
    "min_budget_calibration_size",
    "min_calibration_size",
]
