"""Calibration on the model's own outputs: generate answers to held-apart probes of the
forgotten facts, label them with the oracle, and score the leaking ones with their prompts.

λ is first calibrated on synthetic leaks (service.rules.calibration), which are easier than
the model's own leaks; the guarantee assumes future leaks are exchangeable with the
calibration ones. The budget task (service.rules.budget) therefore generates, off the critical
path, the model's plain answers (no verifier, no feedback) to a seeded sample of probes of
every family that does not ask the filed question as filed: `paraphrased`, `indirect` (the
subject described, never named) and `format_shift` (a list, JSON, the fact first). The answers
the labelling oracle says reveal one of the probe's facts are scored by the merged verifier
with their prompt, and λ is recalibrated on them pooled with the synthetic leaks. These probes
are held apart: B and the early exit are calibrated on other prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from models.generative.probes import (
    Probe,
    ProbeFamily,
    build_probes,
    oracle_leaks,
    sample_by_family,
)
from models.generative.refinement import GenerateFn
from models.generative.rules import RuleSet
from models.generative.verifier import Verifier
from service.rules.calibration import spec_from_rules

HELD_APART_FAMILIES: tuple[ProbeFamily, ...] = ("paraphrased", "indirect", "format_shift")


@dataclass(frozen=True)
class ModelLeaks:
    """What the model's own answers say: scores only, never text."""

    # The probes used (held apart from B's calibration).
    prompts: list[str]
    # Verifier scores (with their prompts) of the answers the oracle labelled as leaking.
    scores: list[float]
    # Per family: answers generated and answers leaking.
    by_family: dict[str, dict[str, int]]

    @property
    def generated(self) -> int:
        return len(self.prompts)

    @property
    def leaking(self) -> int:
        return len(self.scores)


def held_apart_probes(rules: RuleSet, limit: int, *, seed: str) -> list[Probe]:
    """A seeded sample of at most `limit` probes, spread evenly over HELD_APART_FAMILIES."""
    per_family = max(1, math.ceil(limit / len(HELD_APART_FAMILIES)))
    probes = build_probes(spec_from_rules(rules))
    return [
        p
        for p in sample_by_family(probes, per_family, seed=f"model-leaks:{seed}")
        if p.family in HELD_APART_FAMILIES
    ]


def model_leaks(
    generate: GenerateFn, verifier: Verifier, probes: Sequence[Probe], *, seed: int
) -> ModelLeaks:
    """Generate one plain answer per probe, label it with the oracle, score the leaks."""
    by_family: dict[str, dict[str, int]] = {
        f: {"generated": 0, "leaking": 0} for f in HELD_APART_FAMILIES
    }
    leaking: list[tuple[str, str]] = []
    for i, probe in enumerate(probes):
        answer = generate(probe.prompt, banned_phrases=(), instruction=None, seed=seed + i)
        by_family[probe.family]["generated"] += 1
        if any(oracle_leaks(answer, fact, given=probe.prompt) for fact in probe.facts):
            by_family[probe.family]["leaking"] += 1
            leaking.append((answer, probe.prompt))
    scores = (
        [v.score for v in verifier.score_many([a for a, _ in leaking], [p for _, p in leaking])]
        if leaking
        else []
    )
    return ModelLeaks([p.prompt for p in probes], scores, by_family)
