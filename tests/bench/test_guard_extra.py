"""The guard benchmark's helpers: author grouping, family prompts, realized miss rate, exit."""

from __future__ import annotations

import pytest

from bench.guard_extra import (
    by_family,
    exit_from_probes,
    family_prompts,
    group_rows,
    realized_miss,
)
from models.assets.tofu import QA
from models.generative.embedder import HashingEmbedder
from models.generative.refinement import RefinementResult
from models.generative.rules import Fact, ForgetSpec, compile_rules, resolve_facts
from models.generative.verifier import RuleHit, Verdict, Verifier

SPEC = ForgetSpec(
    ["Hsiao Yun-Hwa"],
    facts=[
        Fact("What is the profession of Hsiao Yun-Hwa's father?", "Her father is a paramedic."),
        Fact("Where was Hsiao Yun-Hwa born?", "She was born in Taipei on 05/11/1991."),
    ],
)


def test_group_rows_by_index_or_runs() -> None:
    indexed = [QA("q", "a", 7), QA("q", "a", 3)]
    assert group_rows(indexed) == indexed
    plain = [QA(f"q{i}", "a") for i in range(45)]
    assert [r.author_index for r in group_rows(plain)] == [0] * 20 + [1] * 20 + [2] * 5


def test_family_prompts_hide_the_name_when_indirect() -> None:
    facts = resolve_facts(SPEC)
    prompts = family_prompts(facts, 0, SPEC.identifiers())
    assert set(prompts) == {"direct", "paraphrased", "indirect", "format_shift"}
    assert "Hsiao" not in prompts["indirect"] and "Taipei" in prompts["indirect"]
    assert prompts["direct"] == facts[0].question


def test_realized_miss_has_an_exact_upper_bound() -> None:
    verifier = Verifier(compile_rules(SPEC), HashingEmbedder())
    fact = resolve_facts(SPEC)[0]
    question = fact.question or ""
    leaks = [("He is a paramedic.", question, fact), ("I don't know.", question, fact)]
    out = realized_miss(leaks, verifier, 0.5, 0.05)
    assert out["n_leaking"] == 1 and out["missed"] == 0  # the non-leak is not counted
    assert out["upper_bound"] == pytest.approx(0.95)  # one leak: 1 − 0.05^(1/1)


def _run(first: float, accepted: bool) -> RefinementResult:
    verdict = Verdict(first, [RuleHit("fact-0", "fact", [], first)], [])
    reason = "accepted_after_feedback" if accepted else "budget_exhausted"
    return RefinementResult("x", 1 if accepted else 4, accepted, not accepted, reason, [verdict])


def test_exit_from_probes_uses_only_refined_probes() -> None:
    runs = [_run(0.6, True)] * 30 + [_run(1.0, False)] * 10
    runs += [RefinementResult("x", 0, True, False, "accepted", [Verdict(0.0, [], [])])]
    cal, detail = exit_from_probes(runs, 0.1, 0.05)
    assert detail["rescued"] == 30 and detail["unrescued"] == 10
    assert cal.certified and cal.threshold == 0.6 and cal.unrescued_exit_rate == 1.0
    assert by_family([("direct", True), ("direct", False), ("indirect", True)]) == {
        "direct": 0.5,
        "paraphrased": None,
        "indirect": 1.0,
        "format_shift": None,
    }


def test_replay_ends_a_recorded_trajectory_at_the_first_answer_naming_her() -> None:
    from bench.guard_replay import replay_probe

    verifier = Verifier(compile_rules(SPEC), HashingEmbedder())
    named, misspelt = "Hsiao Yun-Hwa is a paramedic's daughter.", "Her name is Hsiao Yun-Hwo."
    unnamed, clean = "Her father is a paramedic.", "I do not know who that is."

    def row(attempts: list[str], reason: str, response: str | None = None) -> dict[str, object]:
        return {
            "attempts": attempts,
            "reason": reason,
            "rounds": len(attempts) - 1,
            "response": response or attempts[-1],
        }

    # Served after feedback with a misspelt name: refused at that round instead.
    served = row([unnamed, misspelt], "accepted_after_feedback")
    assert replay_probe(served, verifier, 0.99) == ("subject_in_answer", 1)
    # Never accepted: refused at the first regeneration that still names her.
    never = row([unnamed, clean + " Maybe.", misspelt, misspelt, misspelt], "budget_exhausted")
    assert replay_probe(never, verifier, 0.99) == ("subject_in_answer", 2)
    # A flagged first answer naming her: refused at once, whatever followed it.
    assert replay_probe(row([named, clean], "accepted_after_feedback"), verifier, 0.99) == (
        "subject_in_answer",
        0,
    )
    # A clean rescue stays what it was, and so does a first answer that back-off rescued.
    rescued = row([unnamed, clean], "accepted_after_feedback")
    assert replay_probe(rescued, verifier, 0.99) == ("accepted_after_feedback", 1)
    at_once = row([named + " " + clean], "redacted", clean)
    assert replay_probe(at_once, verifier, 0.99) == ("redacted", 0)
    # A backed-off text that was served is screened like a regenerated one.
    cut = row([unnamed, "A paramedic raised her. She grew up in Taipei."], "redacted", misspelt)
    assert replay_probe(cut, verifier, 0.99) == ("subject_in_answer", 1)
