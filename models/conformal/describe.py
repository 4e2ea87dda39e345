"""Plain-English reading of a certificate, for data-protection officers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _pct(x: float) -> str:
    # Three significant digits: 0.1 → "10 %", 0.0149 → "1.49 %"; never "10.000000000000002".
    return f"{100 * x:.3g} %"


# What refinement tries before any regeneration (models/generative/refinement.py `redact`).
_BACK_OFF = (
    "A flagged answer is first backed off: the sentences that carry the leak are dropped, and "
    "the rest is served only if the verifier accepts it at the same threshold."
)


def _budget_sentence(cert: Mapping[str, Any]) -> str:
    if cert.get("budget") is not None:
        b = int(cert["budget"])
        rounds = "round" if b == 1 else "rounds"
        return (
            f"{_BACK_OFF} Otherwise it is regenerated at most {b} {rounds} and then refused; "
            f"of flagged answers that do not name a forgotten subject, to questions that do not "
            f"identify one, at least {_pct(1 - float(cert['alpha_b']))} are expected to be "
            f"replaced by an accepted answer, backed off or regenerated, within {b} {rounds}. "
            f"A question naming a forgotten subject (a distinctive part of the name is enough), "
            f"or describing one by several of their attributes, is refused as soon as its "
            f"answer is flagged, and so is a flagged or regenerated answer that names one, even "
            f"misspelt."
        )
    reason = cert.get("budget_reason") or "it was not calibrated"
    return f"{_BACK_OFF} No regeneration budget is guaranteed: {reason}."


def describe_certificate(cert: Mapping[str, Any]) -> str:
    """A few sentences saying what the certificate promises, and what it does not."""
    version = cert.get("rule_set_version")
    if cert.get("kind") != "conformal_risk":
        return (
            f"No guarantee: {cert.get('reason') or 'the calibration was not certified'}. "
            f"Rule-set version {version} is not certified, and this request must not be "
            f"reported as certified."
        )
    alpha, delta, n = float(cert["alpha"]), float(cert["delta"]), int(cert["n"])
    parts = [
        f"With probability at least {_pct(1 - delta)}, at most {_pct(alpha)} of answers that "
        f"leak the forgotten data get past the verifier (rule-set version {version}).",
        f"This was set from {n} leaking answers labelled for calibration: at the chosen "
        f"threshold {float(cert['threshold']):g}, {cert['misses']} of them "
        f"({_pct(float(cert['empirical_miss_rate']))}) were missed (exact {_pct(1 - delta)} "
        f"upper confidence bound at this threshold: "
        f"{_pct(float(cert['miss_rate_upper_bound']))}).",
        _budget_sentence(cert),
    ]
    if cert.get("refinement_rule") == "early_exit":
        parts.append(str(cert["refinement_guarantee"]))
    elif cert.get("exit_reason"):
        parts.append(f"No early exit is in force: {cert['exit_reason']}.")
    elif cert.get("exit_certified"):
        parts.append(
            "No early exit is in force: its calibrated threshold is 1, which no verifier score "
            "exceeds."
        )
    ffr = cert.get("false_flag_rate")
    if ffr is not None:
        parts.append(
            f"On retained subjects, {_pct(float(ffr))} of harmless answers were flagged anyway."
        )
    parts.append(
        "Leakage here is as judged by the labelling oracle and the verifier; nothing is "
        "removed from the model's weights, and the guarantee assumes future queries resemble "
        "the calibration probes."
    )
    return " ".join(parts)
