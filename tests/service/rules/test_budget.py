"""B's calibration probes are drawn until enough of them are handled by refinement: the draw stops
on that count and nothing else, and B calibrated on the draw keeps its coverage."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from models.conformal import calibrate_budget
from models.generative.conversation import Prompt
from models.generative.refinement import RefinementResult
from service.rules.budget import Abandoned, abandon_when_retired, refine_until_handled


def _result(rounds: float | None) -> RefinementResult:
    """What refine returns for a probe: None = accepted at once (never handled), a number = the
    rounds to acceptance, inf = never accepted within the budget."""
    if rounds is None:
        return RefinementResult("answer", 0, True, False, "accepted", [])
    if math.isinf(rounds):
        return RefinementResult("refused", 4, False, True, "budget_exhausted", [])
    return RefinementResult("answer", int(rounds), True, False, "accepted_after_feedback", [])


def test_the_draw_stops_once_enough_probes_are_handled() -> None:
    outcomes: list[float | None] = [None, 1.0, None, None, math.inf, None, 2.0, 1.0, None]
    prompts = [f"p{i}" for i in range(len(outcomes))]
    called: list[tuple[int, str]] = []

    def refine_one(i: int, prompt: str) -> RefinementResult:
        called.append((i, prompt))
        return _result(outcomes[i])

    runs, rounds = refine_until_handled(prompts, refine_one, wanted=3)
    # The third handled probe is p6: nothing after it is generated. A never-accepted probe is
    # handled like any other (the stop does not look at rounds).
    assert called == [(i, f"p{i}") for i in range(7)]
    assert len(runs) == 7 and rounds == [1.0, math.inf, 2.0]


def test_too_few_handled_probes_uses_every_probe() -> None:
    outcomes: list[float | None] = [None, 1.0, None, 0.0]
    runs, rounds = refine_until_handled(
        [f"p{i}" for i in range(4)], lambda i, _p: _result(outcomes[i]), wanted=30
    )
    assert len(runs) == 4 and rounds == [1.0, 0.0]
    assert not calibrate_budget(rounds, 0.1, 4).certified


def test_b_calibrated_on_the_draw_keeps_its_coverage() -> None:
    """Over 500 random orders of one probe population (a quarter handled, a tail that needs
    the whole budget or more), B from the first 20 handled probes covers the handled probes
    not drawn: the miss rate averaged over orders is at most α_B, within Monte Carlo error."""
    rng = random.Random(7)
    population: list[float | None] = []
    for _ in range(600):
        if rng.random() < 0.75:
            population.append(None)
        else:
            values = [0.0, 1.0, 2.0, 3.0, 4.0, math.inf]
            population.append(rng.choices(values, [15, 40, 20, 13, 10, 2])[0])
    alpha_b, misses, certified = 0.1, [], 0
    for seed in range(500):
        prompts = random.Random(seed).sample(
            [str(i) for i in range(len(population))], len(population)
        )
        runs, rounds = refine_until_handled(
            prompts, lambda _i, p: _result(population[int(p)]), wanted=20
        )
        cal = calibrate_budget(rounds, alpha_b, max_budget=4)
        if not cal.certified or cal.budget is None:
            continue
        certified += 1
        drawn = {int(p) for p in prompts[: len(runs)]}
        rest = [r for i, r in enumerate(population) if r is not None and i not in drawn]
        misses.append(sum(r > cal.budget for r in rest) / len(rest))
    assert certified >= 400, "20 handled probes should certify B on this population"
    mean = sum(misses) / len(misses)
    spread = (sum((m - mean) ** 2 for m in misses) / (len(misses) - 1)) ** 0.5
    assert mean <= alpha_b + 3 * spread / len(misses) ** 0.5
    # Not vacuous: B is tight enough that some orders miss.
    assert mean > 0.0


def test_a_calibration_stops_between_generations_once_its_rules_are_retired() -> None:
    """A retired rule set frees its worker: the wrapper asks before the first generation and
    then every `every_s`, never generating once the answer is no."""
    answers = iter([True, True, False])
    asked: list[bool] = []

    def still_served() -> bool:
        asked.append(next(answers))
        return asked[-1]

    generated: list[str] = []

    def generate(
        prompt: Prompt, *, banned_phrases: Sequence[str], instruction: str | None, seed: int | None
    ) -> str:
        generated.append(str(prompt))
        return "an answer"

    checked = abandon_when_retired(generate, still_served, every_s=0.0)
    assert checked("q1", banned_phrases=(), instruction=None, seed=0) == "an answer"
    assert checked("q2", banned_phrases=(), instruction=None, seed=1) == "an answer"
    with pytest.raises(Abandoned):
        checked("q3", banned_phrases=(), instruction=None, seed=2)
    assert generated == ["q1", "q2"] and asked == [True, True, False]
    # Asked at most every `every_s`: a long interval asks once, before the first generation.
    once = abandon_when_retired(generate, lambda: asked.append(True) or True, every_s=3600.0)
    for i in range(3):
        once(f"r{i}", banned_phrases=(), instruction=None, seed=i)
    assert len(asked) == 4
