"""Calibrating a rule set without generating: λ from verifier scores on leaking texts.

Positives are leaking texts built from each forget spec (the fact itself, reorderings,
paraphrase templates) that the labelling oracle confirms reveal it; negatives are retained
answers about other subjects. Learn-then-Test then picks λ so that the miss rate is ≤ α with
probability ≥ 1 − δ — or says it cannot. No generation on this path: rules go live in seconds,
and the budget B is calibrated afterwards with real generations (see calibrate_budget).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from models.conformal import ThresholdCalibration, calibrate_threshold, false_flag_rate
from models.generative.probes import oracle_reveals, synthetic_leaks
from models.generative.rules import Fact, ForgetSpec, RuleSet
from models.generative.verifier import Verifier
from service.registry.config import GenerativePolicy

# At most this many retained answers are scored for the false-flag rate.
MAX_NEGATIVES = 500

Record = tuple[str, str, float | None]


def retained_facts(path: str | None) -> list[Fact]:
    if not path:
        return []
    facts = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                facts.append(Fact(question=row.get("question"), answer=row["answer"]))
    return facts[:MAX_NEGATIVES]


def calibrate_threshold_for(
    verifier: Verifier,
    specs: Sequence[ForgetSpec],
    negatives: Sequence[str],
    policy: GenerativePolicy,
) -> tuple[ThresholdCalibration, dict[str, Any], list[Record]]:
    """Returns λ's calibration, the figures to store (numbers only) and the records."""
    positives = [
        text for spec in specs for text in synthetic_leaks(spec) if oracle_reveals(text, spec)
    ]
    pos_scores = [v.score for v in verifier.score_many(positives)] if positives else []
    neg_scores = [v.score for v in verifier.score_many(list(negatives))] if negatives else []
    result = calibrate_threshold(pos_scores, policy.alpha, policy.delta)
    serving = result.threshold if result.certified else policy.fallback_threshold
    assert serving is not None
    calibration: dict[str, Any] = {
        "threshold": asdict(result),
        "threshold_certified": result.certified,
        "serving_threshold": float(serving),
        "false_flag_rate": false_flag_rate(neg_scores, serving) if neg_scores else None,
        "negatives": len(neg_scores),
        "positives_source": "synthetic leaks confirmed by the labelling oracle",
        "requests_in_force": len(specs),
        # B starts at the policy's maximum and is replaced by a calibrated value once
        # generations for the probes have been run (task lethe.calibrate_budget).
        "serving_budget": policy.max_budget,
        "budget": {"status": "pending", "max_budget": policy.max_budget},
    }
    records: list[Record] = [("positive_score", "synthetic_leak", s) for s in pos_scores]
    records += [("negative_score", "retained_answer", s) for s in neg_scores]
    return result, calibration, records


def spec_from_rules(rules: RuleSet) -> ForgetSpec:
    """The forget spec a rule set was compiled from, enough to rebuild its probes and leaks
    (requests' own copies are deleted once their rules are active)."""
    by_kind: dict[str, list[str]] = {"name": [], "alias": [], "email": [], "phone": []}
    facts = []
    for rule in rules.rules:
        if rule.kind == "fact":
            facts.append(Fact(rule.question, rule.text, list(rule.key_spans)))
        else:
            by_kind[rule.kind].append(rule.text)
    return ForgetSpec(
        subject_names=by_kind["name"],
        aliases=by_kind["alias"],
        emails=by_kind["email"],
        phones=by_kind["phone"],
        facts=facts,
    )
