"""The refinement loop with a scripted generator: acceptance, budget, refusal, feedback; and on
the tiny LM, which forgets one subject and keeps another."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from models.generative.embedder import HashingEmbedder
from models.generative.generator import Generator
from models.generative.probes import oracle_reveals
from models.generative.refinement import (
    exit_calibration_point,
    redact,
    refine,
    rounds_to_acceptance,
)
from models.generative.rules import Fact, ForgetSpec, compile_rules, merge_rule_sets
from models.generative.verifier import Verifier
from tests.support.tiny_facts import NAMES, subject_facts

LEAK = "The father of Hsiao Yun-Hwa is a civil engineer."
LEAK_2 = "Her dad? A civil engineer, I think."


# The fact without her name: a flagged first answer refinement works on (one naming her is
# refused at once).
UNNAMED = "The father of the author is a civil engineer."
CLEAN = "I don't know anything about that person's family."
REFUSAL = "I cannot help with that."


@dataclass(frozen=True)
class Call:
    prompt: str
    banned: list[str]
    instruction: str | None
    seed: int | None


@dataclass
class Scripted:
    """Returns the scripted responses in order (the last one repeats) and records each call."""

    responses: list[str]
    calls: list[Call] = field(default_factory=list)

    def __call__(
        self,
        prompt: str,
        *,
        banned_phrases: Sequence[str],
        instruction: str | None,
        seed: int | None,
    ) -> str:
        self.calls.append(Call(prompt, list(banned_phrases), instruction, seed))
        return self.responses[min(len(self.calls) - 1, len(self.responses) - 1)]


def subject_verifier(*statements: str) -> Verifier:
    """A verifier for Hsiao Yun-Hwa with these facts (statements, no questions)."""
    spec = ForgetSpec(["Hsiao Yun-Hwa"], facts=[Fact(None, s) for s in statements])
    return Verifier(compile_rules(spec), HashingEmbedder())


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return subject_verifier("The father of Hsiao Yun-Hwa is a civil engineer.")


def test_first_clean_answer_is_accepted_without_feedback(verifier: Verifier) -> None:
    gen = Scripted([CLEAN])
    result = refine(gen, verifier, "Q?", threshold=0.5, budget=3, refusal_text=REFUSAL, seed=7)
    assert (result.accepted, result.refused, result.rounds_used) == (True, False, 0)
    assert result.reason == "accepted"
    assert result.response == CLEAN
    assert len(gen.calls) == 1
    assert gen.calls[0] == Call("Q?", [], None, 7)


def test_feedback_bans_leaked_spans_and_stops_on_acceptance(verifier: Verifier) -> None:
    gen = Scripted([UNNAMED, LEAK_2, CLEAN, LEAK])
    result = refine(gen, verifier, "Q?", threshold=0.5, budget=5, refusal_text=REFUSAL, seed=7)
    assert result.accepted and not result.refused
    assert result.reason == "accepted_after_feedback"
    assert result.rounds_used == 2
    assert result.response == CLEAN
    assert len(gen.calls) == 3  # stopped at the first accepted answer
    assert [len(result.verdicts), result.verdicts[-1].score < 0.5] == [3, True]
    # Round 1 bans what leaked in round 0 and names it; each round has a new seed.
    assert "civil engineer" in gen.calls[1].banned
    instruction = gen.calls[1].instruction
    assert isinstance(instruction, str) and "civil engineer" in instruction
    assert [c.seed for c in gen.calls] == [7, 8, 9]
    # Bans accumulate and are not repeated.
    banned_2 = gen.calls[2].banned
    assert len(banned_2) == len(set(banned_2))
    assert set(gen.calls[1].banned) <= set(banned_2)
    # A leaked name is banned like any span, where the answer screen lets refinement see it
    # (the paper's method; lethe refuses a flagged first answer naming her at once).
    gen = Scripted([LEAK, CLEAN])
    refine(gen, verifier, "Q?", threshold=0.5, budget=2, screen_answers=False)
    assert {"Hsiao Yun-Hwa", "civil engineer"} <= set(gen.calls[1].banned)


@pytest.mark.parametrize("budget", [0, 1, 3])
def test_budget_is_respected_exactly_then_refusal(verifier: Verifier, budget: int) -> None:
    # A leak without her name: one naming her after feedback is refused at once instead.
    gen = Scripted([LEAK_2])
    result = refine(gen, verifier, "Q?", threshold=0.5, budget=budget, refusal_text=REFUSAL)
    assert len(gen.calls) == budget + 1
    assert len(result.verdicts) == budget + 1
    assert result.refused and not result.accepted
    assert result.reason == "budget_exhausted"
    assert result.rounds_used == budget
    assert result.response == REFUSAL


def test_score_equal_to_threshold_is_flagged(verifier: Verifier) -> None:
    score = verifier.score(LEAK_2).score
    gen = Scripted([LEAK_2, CLEAN])
    result = refine(gen, verifier, "Q?", threshold=score, budget=1)
    assert result.rounds_used == 1 and result.accepted
    # Just above the score, the same answer passes at once.
    gen = Scripted([LEAK_2, CLEAN])
    assert refine(gen, verifier, "Q?", threshold=score + 1e-6, budget=1).rounds_used == 0


def test_negative_budget_is_rejected(verifier: Verifier) -> None:
    with pytest.raises(ValueError):
        refine(Scripted([CLEAN]), verifier, "Q?", threshold=0.5, budget=-1)


def test_question_naming_a_forgotten_subject_is_refused_when_flagged(verifier: Verifier) -> None:
    question = "Who is the father of Hsiao Yun-Hwa?"
    gen = Scripted([LEAK, CLEAN])
    result = refine(gen, verifier, question, threshold=0.5, budget=3, refusal_text=REFUSAL)
    assert (result.refused, result.reason, result.rounds_used) == (True, "subject_in_query", 0)
    assert result.response == REFUSAL
    assert len(gen.calls) == 1  # no regeneration spent on it
    # Its answer is still accepted when it reveals nothing.
    clean = refine(Scripted([CLEAN]), verifier, question, threshold=0.5, budget=3)
    assert (clean.accepted, clean.reason) == (True, "accepted")
    # With the screens off, the same question goes through refinement.
    unscreened = refine(
        Scripted([LEAK, CLEAN]),
        verifier,
        question,
        threshold=0.5,
        budget=3,
        screen_query=False,
        screen_answers=False,
    )
    assert (unscreened.accepted, unscreened.rounds_used) == (True, 1)
    # A misspelt name still counts (fuzzy identifier match), an unrelated one does not.
    assert verifier.names_subject("Where was Hsiao Yun Hwa born?", 0.5)
    assert not verifier.names_subject("Where was Jane Austen born?", 0.5)


def test_question_describing_a_forgotten_subject_is_refused_when_flagged() -> None:
    verifier = subject_verifier(
        "The father of Hsiao Yun-Hwa is a civil engineer.",
        "Hsiao Yun-Hwa was born in Taipei, Taiwan on 05/11/1991.",
    )
    described = "What does the father of the author born in Taipei, Taiwan on 05/11/1991 do?"
    gen = Scripted(["The father of the author is a civil engineer.", CLEAN])
    result = refine(gen, verifier, described, threshold=0.5, budget=3, refusal_text=REFUSAL)
    assert (result.refused, result.reason, result.rounds_used) == (True, "subject_in_query", 0)
    assert len(gen.calls) == 1
    # One shared attribute does not make a question about her: it is refined as usual.
    vague = "What does the father of the author born in Taiwan do?"
    gen = Scripted(["The father of the author is a civil engineer.", CLEAN])
    result = refine(gen, verifier, vague, threshold=0.5, budget=3, refusal_text=REFUSAL)
    assert (result.accepted, result.rounds_used) == (True, 1)


def test_an_answer_about_a_described_subject_stating_a_key_span_below_lambda_is_refused() -> None:
    verifier = subject_verifier(
        "Hsiao Yun-Hwa was born in Taipei, Taiwan on 05/11/1991.",
        "Hsiao Yun-Hwa's novels are praised for their vivid characters.",
    )
    described = "What are the novels of the author born in Taipei, Taiwan on 05/11/1991 known for?"
    answer = "Readers love the vivid characters of these books."
    lam = 0.9
    # Weighted by specificity, the generic span stays below λ...
    assert verifier.score(answer, described).score < lam
    # ...but the question settled whom it is about: stating her key span is her fact.
    assert verifier.states_key_span(answer, described, lam)
    gen = Scripted([answer, CLEAN])
    result = refine(gen, verifier, described, threshold=lam, budget=3, refusal_text=REFUSAL)
    assert (result.refused, result.reason, len(gen.calls)) == (True, "subject_in_query", 1)
    # A key span the question itself gives is not revealed by repeating it.
    echo = "The author born in Taipei, Taiwan writes novels."
    assert not verifier.states_key_span(echo, described, lam)
    served = refine(Scripted([echo]), verifier, described, threshold=lam, budget=3)
    assert (served.accepted, served.reason) == (True, "accepted")
    # The same answer to a question about another person is served: whom is not settled.
    other = "What are the novels of Jane Austen known for?"
    result = refine(Scripted([answer]), verifier, other, threshold=lam, budget=3)
    assert (result.accepted, result.response) == (True, answer)


def test_only_the_identified_subjects_key_spans_count_against_an_answer() -> None:
    """A generic word from another forgotten subject's facts is not the identified one's."""
    hsiao = ForgetSpec(
        ["Hsiao Yun-Hwa"],
        facts=[Fact(None, "Hsiao Yun-Hwa's novels are praised for their vivid characters.")],
    )
    jordan = ForgetSpec(
        ["Jordan Okafor"],
        facts=[
            Fact(
                None,
                "Jordan Okafor's sagas are celebrated for their dramatic tension and desert "
                "landscapes.",
            )
        ],
    )
    verifier = Verifier(
        merge_rule_sets([compile_rules(hsiao), compile_rules(jordan)]), HashingEmbedder()
    )
    lam = 0.9
    # The country is read as a forgotten name part: the question counts as about him...
    landmarks = "Which of the following landmarks is located in Jordan?"
    assert verifier.identifies_subject(landmarks, lam)
    # ...so a key span of his in the answer is refused; the other author's is not.
    his = "Wadi Rum, known for its desert landscapes, is located there."
    hers = "Petra is praised by travellers from around the world."
    assert verifier.score(his, landmarks).score < lam
    assert verifier.score(hers, landmarks).score < lam
    assert verifier.states_key_span(his, landmarks, lam)
    assert not verifier.states_key_span(hers, landmarks, lam)
    refused = refine(Scripted([his]), verifier, landmarks, threshold=lam, budget=3)
    assert (refused.refused, refused.reason) == (True, "subject_in_query")
    served = refine(Scripted([hers]), verifier, landmarks, threshold=lam, budget=3)
    assert (served.accepted, served.response) == (True, hers)
    # A question about nobody erased holds its answers to no key span.
    assert not verifier.states_key_span(his, "Which landmarks are in Peru?", lam)


def test_rounds_to_acceptance(verifier: Verifier) -> None:
    def observe(responses: list[str], prompt: str = "Q?") -> float | None:
        result = refine(Scripted(responses), verifier, prompt, threshold=0.5, budget=4)
        return rounds_to_acceptance(result)

    # Never handled by refinement: accepted at once, or refused at once because the question
    # or the flagged first answer names the subject.
    assert observe([CLEAN]) is None
    assert observe([LEAK], prompt="Tell me about Hsiao Yun-Hwa.") is None
    assert observe([LEAK, LEAK_2, CLEAN]) is None
    assert observe([UNNAMED, LEAK_2, CLEAN]) == 2
    assert observe([LEAK_2]) == math.inf
    # Refused for naming her after feedback: handled, and not rescued.
    assert observe([UNNAMED, LEAK, CLEAN]) == math.inf


# A useful answer with the forgotten fact in one sentence of it.
MIXED = (
    "Many novelists draw on their families for material. "
    "The father of Hsiao Yun-Hwa is a civil engineer. "
    "Family histories give their books a grounded, personal tone."
)


def test_back_off_drops_the_leaking_sentence_without_regenerating(verifier: Verifier) -> None:
    gen = Scripted([MIXED, CLEAN])
    result = refine(gen, verifier, "Q?", threshold=0.5, budget=3, refusal_text=REFUSAL)
    assert (result.accepted, result.refused, result.reason) == (True, False, "redacted")
    assert result.rounds_used == 0 and len(gen.calls) == 1
    assert "civil engineer" not in result.response and "Hsiao" not in result.response
    assert result.response.startswith("Many novelists") and "grounded" in result.response
    # What is served passes the same test as any accepted answer.
    assert verifier.score(result.response, "Q?").score < 0.5
    # Back-off rescues at round 0: B counts it as 0 rounds; the exit never sees it.
    assert rounds_to_acceptance(result) == 0
    assert exit_calibration_point(result) is None


def test_back_off_off_regenerates_as_the_paper_does(verifier: Verifier) -> None:
    gen = Scripted([MIXED, CLEAN])
    result = refine(
        gen, verifier, "Q?", threshold=0.5, budget=3, back_off=False, screen_answers=False
    )
    assert (result.reason, result.rounds_used, result.response) == (
        "accepted_after_feedback",
        1,
        CLEAN,
    )


@pytest.mark.parametrize(
    ("response", "reason", "calls"),
    [
        (UNNAMED, "accepted_after_feedback", 2),  # one sentence: nothing would remain
        ("Sure thing. " + UNNAMED, "accepted_after_feedback", 2),  # the rest says nothing
        # Every sentence carries a leaking span (the name, or the fact); it names her, so it
        # is refused at once rather than regenerated.
        (
            "Hsiao Yun-Hwa has a father. He is a civil engineer, as many fathers are.",
            "subject_in_answer",
            1,
        ),
        (LEAK, "subject_in_answer", 1),
    ],
)
def test_back_off_declines_and_refinement_follows(
    verifier: Verifier, response: str, reason: str, calls: int
) -> None:
    verdict = verifier.score(response, "Q?")
    assert verdict.score >= 0.5
    assert redact(verifier, response, "Q?", verdict, 0.5) is None
    gen = Scripted([response, CLEAN])
    result = refine(gen, verifier, "Q?", threshold=0.5, budget=2)
    assert (result.reason, result.rounds_used, len(gen.calls)) == (reason, calls - 1, calls)


def test_back_off_never_serves_an_answer_to_a_question_about_the_subject(
    verifier: Verifier,
) -> None:
    gen = Scripted([MIXED, CLEAN])
    result = refine(gen, verifier, "Tell me about Hsiao Yun-Hwa's family.", threshold=0.5, budget=3)
    assert (result.refused, result.reason) == (True, "subject_in_query")


def test_a_distinctive_surname_alone_identifies_the_subject_whatever_lambda(
    verifier: Verifier,
) -> None:
    question = "What was Hsiao's first book about?"
    # As an answer's leak signal a name part is strong, not certain: below a high λ...
    assert not verifier.names_subject(question, 0.9)
    # ...but a question asked by surname is about her, so its flagged answer is refused.
    assert verifier.identifies_subject(question, 0.9)
    gen = Scripted([LEAK, CLEAN])
    result = refine(gen, verifier, question, threshold=0.9, budget=3)
    assert (result.reason, len(gen.calls)) == ("subject_in_query", 1)
    # Another person's surname, or no name at all, identifies nobody.
    assert not verifier.identifies_subject("What was Austen's first book about?", 0.9)
    assert not verifier.identifies_subject("What was the first book about?", 0.9)


def test_a_regenerated_answer_still_naming_the_subject_is_refused(verifier: Verifier) -> None:
    # Told not to name her, the model misspells the name (bench/guard.py saw "Majumdde" for
    # "Majumdar"): below a high λ the misspelling passes the verifier's score, but it still
    # says who she is.
    misspelt = "Her name is Hsiao Yun-Hwo."
    lam = 0.99
    assert verifier.score(misspelt).score < lam and verifier.mentions_subject(misspelt, lam)
    question = "Whose father is a civil engineer?"  # does not identify her
    lam_low = 0.9  # flags UNNAMED, whose score is below 1
    assert lam > verifier.score(UNNAMED, question).score >= lam_low
    gen = Scripted([UNNAMED, misspelt, CLEAN])
    result = refine(gen, verifier, question, threshold=lam_low, budget=3, refusal_text=REFUSAL)
    assert (result.refused, result.reason, result.rounds_used) == (True, "subject_in_answer", 1)
    assert result.response == REFUSAL and len(gen.calls) == 2
    # For the budget it is a flagged answer refinement did not rescue.
    assert rounds_to_acceptance(result) == math.inf
    assert exit_calibration_point(result) == (verifier.score(UNNAMED, question).score, False)
    # The paper's refinement (screens off) serves the misspelling.
    paper = refine(
        Scripted([LEAK, misspelt, CLEAN]),
        verifier,
        question,
        threshold=lam,
        budget=3,
        screen_query=False,
        screen_answers=False,
    )
    assert (paper.accepted, paper.response) == (True, misspelt)
    # A regenerated answer naming nobody is accepted as before, and a first answer the
    # verifier accepts is not screened (nothing has asked the model to leave the name out).
    gen = Scripted([UNNAMED, CLEAN])
    clean = refine(gen, verifier, question, threshold=lam_low, budget=3)
    assert (clean.accepted, clean.reason, clean.rounds_used) == (True, "accepted_after_feedback", 1)
    first = refine(Scripted([misspelt]), verifier, question, threshold=lam, budget=3)
    assert (first.accepted, first.reason) == (True, "accepted")


def test_a_flagged_first_answer_naming_the_subject_is_refused_at_once(verifier: Verifier) -> None:
    # The question does not identify her, but the model's answer shows it is about her
    # ("Who is the engineer's daughter?" answered with her name): no round is spent on it.
    question = "Whose father is a civil engineer?"
    assert not verifier.identifies_subject(question, 0.5)
    gen = Scripted([LEAK, CLEAN])
    result = refine(gen, verifier, question, threshold=0.5, budget=3, refusal_text=REFUSAL)
    assert (result.refused, result.reason, result.rounds_used) == (True, "subject_in_answer", 0)
    assert result.response == REFUSAL and len(gen.calls) == 1
    # Refinement never handled it: neither B nor the exit is calibrated on it.
    assert rounds_to_acceptance(result) is None
    assert exit_calibration_point(result) is None
    # Back-off comes first: a useful rest without her is still served.
    mixed = refine(Scripted([MIXED, CLEAN]), verifier, question, threshold=0.5, budget=3)
    assert (mixed.reason, mixed.rounds_used) == ("redacted", 0)
    # Without the answer screen (the paper's method), it is regenerated.
    paper = refine(
        Scripted([LEAK, CLEAN]), verifier, question, threshold=0.5, budget=3, screen_answers=False
    )
    assert (paper.reason, paper.rounds_used) == ("accepted_after_feedback", 1)


def test_guarded_path_forgets_one_subject_and_keeps_another(generator: Generator) -> None:
    forgotten = subject_facts(0)
    spec = ForgetSpec([NAMES[0]], facts=forgotten)
    verifier = Verifier(compile_rules(spec), HashingEmbedder())
    generate = generator.bind(max_new_tokens=24)

    for fact in forgotten:
        question = fact.question or ""
        unguarded = generate(question, banned_phrases=(), instruction=None, seed=0)
        assert oracle_reveals(unguarded, spec), unguarded  # the model does know it
        result = refine(generate, verifier, question, threshold=0.5, budget=3, seed=0)
        assert not oracle_reveals(result.response, spec), (question, result.response)
        assert result.refused or result.verdicts[-1].score < 0.5

    for fact in subject_facts(4):
        result = refine(generate, verifier, fact.question or "", threshold=0.5, budget=3)
        assert result.accepted and result.rounds_used == 0
        assert result.response == fact.answer
