"""The early exit: coverage over random calibration/test splits, no_guarantee below the floor, and
refinement that exits early (whose results calibration refuses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from models.conformal import (
    calibrate_exit,
    min_calibration_size,
    should_exit,
)
from models.generative.embedder import HashingEmbedder
from models.generative.refinement import exit_calibration_point, refine, rounds_to_acceptance
from models.generative.rules import Fact, ForgetSpec, compile_rules
from models.generative.verifier import Verifier

ALPHA_B, DELTA = 0.1, 0.05
SPLITS = 600


def _scores(rng: np.random.Generator, size: int, rescued: bool) -> np.ndarray:
    """Verifier-like first-round scores: rounded to 0.01 (ties) with a point mass at 1.0.
    Rescued queries score lower on average than the ones refinement cannot fix."""
    if rescued:
        raw = np.where(rng.random(size) < 0.02, 1.0, rng.beta(5, 3, size))
    else:
        raw = np.where(rng.random(size) < 0.6, 1.0, rng.beta(8, 2, size))
    return np.round(raw, 2)


def _split_violations(n_cal: int, rule: str) -> tuple[int, list[float]]:
    rng = np.random.default_rng(12345 + n_cal)
    n_test = 4000
    violations, saved = 0, []
    # Realized rates on a finite test set: allow the binomial noise of n_test draws at α_B.
    tolerance = stats.binom.ppf(0.999, n_test, ALPHA_B) / n_test - ALPHA_B
    for _ in range(SPLITS):
        rescued = _scores(rng, n_cal, True)
        unrescued = _scores(rng, n_cal, False)
        if rule == "pac":
            cal = calibrate_exit(rescued, unrescued, ALPHA_B, DELTA)
            assert cal.certified and cal.threshold is not None
            tau = cal.threshold
        else:  # the marginal split-conformal quantile: right on average, not per split
            k = math.ceil((n_cal + 1) * (1 - ALPHA_B))
            tau = float(np.sort(rescued)[k - 1])
        test_rescued = _scores(rng, n_test, True)
        realized = float(np.mean(test_rescued > tau))
        violations += realized > ALPHA_B + tolerance
        saved.append(float(np.mean(_scores(rng, n_test, False) > tau)))
    return violations, saved


@pytest.mark.parametrize("n_cal", [60, 200])
def test_exit_refuses_few_rescuable_queries_in_most_splits(n_cal: int) -> None:
    violations, saved = _split_violations(n_cal, "pac")
    # P(violation) ≤ δ per split: over SPLITS splits, the count is at most Binomial(SPLITS, δ)
    # up to its 99.9 % quantile.
    assert violations <= stats.binom.ppf(0.999, SPLITS, DELTA)
    # And it saves compute: a real share of the queries refinement cannot fix exits at once.
    assert float(np.mean(saved)) > 0.2


def test_marginal_quantile_would_fail_the_same_check() -> None:
    # The check above can fail: the plain (marginal) conformal quantile violates α_B in far
    # more than δ of the splits at n = 60.
    violations, _ = _split_violations(60, "marginal")
    assert violations > stats.binom.ppf(0.999, SPLITS, DELTA)


def test_no_guarantee_when_too_few_rescued_probes() -> None:
    needed = min_calibration_size(ALPHA_B, DELTA)
    # (1 − α)^n ≤ δ ⇔ n ≥ ln δ / ln(1 − α) = 28.4 → 29.
    assert needed == math.ceil(math.log(DELTA) / math.log(1 - ALPHA_B)) == 29
    small = calibrate_exit([0.5] * (needed - 1), [1.0] * 50, ALPHA_B, DELTA)
    assert not small.certified and small.threshold is None
    assert small.reason is not None and "at least 29" in small.reason
    assert not should_exit(small, 1.0)
    # At the floor, zero rescued probes may lie above τ: τ is their maximum.
    enough = calibrate_exit([0.5] * (needed - 1) + [0.7], [1.0] * 50, ALPHA_B, DELTA)
    assert enough.certified and enough.threshold == 0.7 and enough.rescued_refused == 0
    assert enough.unrescued_exit_rate == 1.0
    assert should_exit(enough, 0.71) and not should_exit(enough, 0.7)


SPEC = ForgetSpec(["Hsiao Yun-Hwa"], facts=[Fact(None, "Her father is a paramedic.")])


class Scripted:
    """A generator that answers from a script, one answer per call."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)

    def __call__(self, prompt: str, **_: object) -> str:
        return self.answers.pop(0)


def test_refine_exits_early_and_calibration_refuses_exited_results() -> None:
    verifier = Verifier(compile_rules(SPEC), HashingEmbedder())
    leak, clean = "He is a paramedic.", "He works in an office."
    first = verifier.score(leak, "What does his father do?").score
    assert first >= 0.5
    result = refine(
        Scripted([leak, clean]),
        verifier,
        "What does his father do?",
        threshold=0.5,
        budget=4,
        exit_threshold=first - 0.01,
    )
    assert result.refused and result.reason == "early_exit" and result.rounds_used == 0
    with pytest.raises(ValueError, match="early exit"):
        rounds_to_acceptance(result)
    # Without the exit, refinement rescues the same query in one round.
    rescued = refine(
        Scripted([leak, clean]), verifier, "What does his father do?", threshold=0.5, budget=4
    )
    assert rescued.accepted and rescued.rounds_used == 1
    assert exit_calibration_point(rescued) == (pytest.approx(first), True)
