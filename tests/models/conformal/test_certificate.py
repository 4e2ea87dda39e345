"""The audit certificate and its plain-English reading, for both kinds, and the refinement rule it
states is in force."""

from __future__ import annotations

import json

import numpy as np

from models.conformal import (
    DEFAULT_ASSUMPTIONS,
    build_certificate,
    calibrate_budget,
    calibrate_exit,
    calibrate_threshold,
    describe_certificate,
    false_flag_rate,
)


def test_conformal_risk_certificate() -> None:
    rng = np.random.default_rng(1)
    threshold = calibrate_threshold(rng.beta(5, 2, 400), 0.1, 0.05)
    budget = calibrate_budget([0.0] * 60 + [1.0] * 30 + [2.0] * 10, 0.1, max_budget=4)
    ffr = false_flag_rate(rng.beta(2, 5, 500), threshold.threshold or 0.0)
    cert = build_certificate(threshold, budget, false_flag_rate=ffr, rule_set_version=7)
    restored = json.loads(json.dumps(cert, allow_nan=False))
    assert restored == cert
    assert cert["kind"] == "conformal_risk" and cert["certified"] is True
    assert cert["alpha"] == 0.1 and cert["delta"] == 0.05 and cert["n"] == 400
    assert cert["threshold"] == threshold.threshold
    assert cert["miss_rate_upper_bound"] == threshold.miss_rate_upper_bound
    # ⌈101 · 0.9⌉ = 91st smallest of 60 zeros, 30 ones, 10 twos.
    assert cert["budget"] == 2 and cert["alpha_b"] == 0.1 and cert["budget_reason"] is None
    assert cert["false_flag_rate"] == ffr and cert["rule_set_version"] == 7
    assert cert["assumptions"] == list(DEFAULT_ASSUMPTIONS)
    text = describe_certificate(cert)
    assert text.startswith("With probability at least 95 %, at most 10 % of answers that leak")
    assert "regenerated at most 2 rounds and then refused" in text
    assert "weights" in text and "harmless answers were flagged" in text


def test_no_guarantee_certificate() -> None:
    threshold = calibrate_threshold([0.9] * 12, 0.1, 0.05)
    budget = calibrate_budget([0.0] * 5, 0.1, max_budget=3)
    cert = build_certificate(
        threshold, budget, false_flag_rate=None, rule_set_version="v3", assumptions=["custom"]
    )
    json.dumps(cert, allow_nan=False)
    assert cert["kind"] == "no_guarantee" and cert["certified"] is False
    assert cert["threshold"] is None and cert["budget"] is None
    assert cert["budget_reason"] is not None and cert["assumptions"] == ["custom"]
    text = describe_certificate(cert)
    assert text.startswith(
        "No guarantee: only 12 calibration examples; at least 29 are needed for α=0.1, δ=0.05."
    )
    assert "v3 is not certified" in text


def test_uncalibrated_budget_is_said_plainly() -> None:
    rng = np.random.default_rng(2)
    threshold = calibrate_threshold(rng.beta(5, 2, 200), 0.2, 0.1)
    cert = build_certificate(threshold, None, false_flag_rate=None, rule_set_version=1)
    assert cert["kind"] == "conformal_risk" and cert["alpha_b"] is None
    assert "No regeneration budget is guaranteed" in describe_certificate(cert)


ALPHA_B, DELTA = 0.1, 0.05


def test_certificate_states_the_rule_in_force() -> None:
    threshold = calibrate_threshold([1.0] * 40, 0.1, 0.05)
    exit_cal = calibrate_exit([0.5] * 40, [1.0] * 10, ALPHA_B, DELTA)
    cert = build_certificate(
        threshold, None, false_flag_rate=0.01, rule_set_version=3, exit_cal=exit_cal
    )
    assert cert["refinement_rule"] == "early_exit"
    assert cert["exit_certified"] is True and cert["exit_threshold"] == 0.5
    text = describe_certificate(cert)
    assert "refused at once" in text and "would have rescued" in text
    uncalibrated = build_certificate(threshold, None, false_flag_rate=None, rule_set_version=3)
    assert uncalibrated["refinement_rule"] == "max_budget"
    assert uncalibrated["exit_certified"] is None
    too_few = calibrate_exit([0.5] * 5, [], ALPHA_B, DELTA)
    cert = build_certificate(
        threshold, None, false_flag_rate=None, rule_set_version=3, exit_cal=too_few
    )
    assert cert["refinement_rule"] == "max_budget"
    assert "No early exit is in force" in describe_certificate(cert)
    # Certified, but τ = 1 exceeds no score: the exit would never fire, so it is not in force.
    saturated = calibrate_exit([1.0] * 40, [1.0] * 10, ALPHA_B, DELTA)
    assert saturated.certified and saturated.threshold == 1.0
    cert = build_certificate(
        threshold, None, false_flag_rate=None, rule_set_version=3, exit_cal=saturated
    )
    assert cert["refinement_rule"] == "max_budget"
    assert "no verifier score exceeds" in describe_certificate(cert)
