"""Generate, verify, regenerate with feedback, and refuse when the budget runs out.

Round 0 is the plain generation. Each further round (at most `budget` of them) bans every span
that leaked so far from decoding, names them in an instruction, and moves to a new seed. A
response is accepted when its verifier score is below the threshold λ. `rounds_used` counts
regeneration rounds, so B = 0 means "one attempt, then refuse".

A question that identifies a forgotten subject — by name, or by several of their identifying
attributes together (`Verifier.identifies_subject`) — and whose first answer is flagged is
refused at once (`screen_query`): the only acceptable answer to it is one that says nothing
about the subject, and regenerating mostly yields paraphrases of the forgotten fact, invented
ones, or leaks the verifier misses (measured by bench/guard.py: refining such questions raised
the leak rate of the no-name probes above refusing their flagged answers). For such a question
the first answer counts as flagged, too, when it states any key span of the identified
subject's forgotten facts that the question did not give (`Verifier.states_key_span`), however
common its words: specificity weighting guards against attributing a generic word to the wrong
person, and here the question has settled whom the answer is about (the residual leaks of
bench/guard.py's no-name probes were mostly answers stating one generic key span, "immersive"
or "characters", scored below λ). Refinement is for flagged answers to other questions, where a
regenerated answer can be useful.

A flagged first answer that back-off (below) cannot rescue and that names a forgotten subject
(`Verifier.mentions_subject`) is refused at once as well (`screen_answers`), for the same
reason: whatever the question said, the model read it as being about the subject. Regenerated
under feedback to leave the name out, such answers came back with a misspelt name or another
erased author's name, never an acceptable answer (bench/guard.py's full runs of 2026-12-01,
both author sets: all 56 calibration probes whose flagged first answer named a forgotten
subject were refused a round later), and a regenerated answer naming a forgotten subject is
refused too.

A flagged answer to any other question is first backed off (`redact`, as conformal factuality
drops claims rather than resampling the answer): the sentences that carry the leak are dropped,
and what remains is served when the verifier accepts it at the same λ and it still says
something. This costs one verifier call instead of a regeneration, so it is tried before every
regeneration round; a backed-off answer is held to exactly the test a regenerated one is.

A flagged first answer that back-off cannot rescue is refused at once, too, when an early exit
is in force and the answer's exit score (its verifier score) is above `exit_threshold`:
refinement is then predicted to fail, and the exit saves its rounds
(models/conformal/early_exit.py bounds how often it refuses a query refinement would have
rescued).

λ, B and the exit threshold come from conformal calibration (models/conformal); this module
only applies them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from models.generative.conversation import Prompt, screen_text
from models.generative.normalize import contains_run, sentences, skeleton, words
from models.generative.verifier import Verdict, Verifier

# Kept free of torch/transformers: the service imports this module to serve any generator.


class GenerateFn(Protocol):
    """What the refinement loop calls: one attempt, with feedback from earlier attempts."""

    def __call__(
        self,
        prompt: Prompt,
        *,
        banned_phrases: Sequence[str],
        instruction: str | None,
        seed: int | None,
    ) -> str: ...


Reason = Literal[
    "accepted",
    "accepted_after_feedback",
    "redacted",
    "budget_exhausted",
    "subject_in_query",
    "subject_in_answer",
    "early_exit",
]
DEFAULT_REFUSAL = "I'm sorry, but I can't share information about that."
# A backed-off answer shorter than this says nothing worth serving ("Sure." or a bare name):
# regenerate instead.
MIN_REDACTED_WORDS = 4


@dataclass(frozen=True)
class RefinementResult:
    response: str
    rounds_used: int
    accepted: bool
    refused: bool
    reason: Reason
    # One verdict per attempt, in order (len = rounds_used + 1).
    verdicts: list[Verdict]


def feedback_instruction(spans: Sequence[str]) -> str:
    listed = "; ".join(f'"{s}"' for s in spans)
    return (
        "Do not reveal, repeat or hint at any of the following, in any wording: "
        f"{listed}. If the question cannot be answered without them, say that you cannot "
        "share that information."
    )


def redact(
    verifier: Verifier, response: str, prompt: str, verdict: Verdict, threshold: float
) -> str | None:
    """Back off a flagged answer: drop every sentence that states a leaking span or that the
    verifier flags on its own, and return what remains when the verifier accepts it
    (score < `threshold`) and it keeps at least MIN_REDACTED_WORDS words; else None.

    The remainder is scored as a whole, with the prompt, so a fact split across two kept
    sentences, or attributed by a name in another one, is still caught."""
    parts = sentences(response)
    if len(parts) < 2:
        return None
    spans = [words(s) for s in verdict.spans_at(threshold)]
    own = verifier.score_many(parts, [prompt] * len(parts))
    kept = []
    for part, verdict_of_part in zip(parts, own, strict=True):
        tokens = words(part)  # once per sentence, not once per span
        if verdict_of_part.score < threshold and not any(contains_run(tokens, s) for s in spans):
            kept.append(part)
    remainder = " ".join(kept)
    if len(kept) == len(parts) or len(words(remainder)) < MIN_REDACTED_WORDS:
        return None
    return remainder if verifier.score(remainder, prompt).score < threshold else None


@dataclass(frozen=True)
class _Judge:
    """How one request's answers are judged, the same in every round."""

    verifier: Verifier
    prompt: str
    """The text answers are judged against: the question, or the whole conversation."""
    threshold: float
    refusal_text: str
    in_scope: bool
    """The question (or conversation) identifies a forgotten subject (and `screen_query` is
    on)."""
    exit_threshold: float | None
    back_off: bool
    screen_answers: bool

    def settle(
        self, round_: int, response: str, verdict: Verdict, verdicts: list[Verdict]
    ) -> RefinementResult | None:
        """The request's result if this round's answer settles it; None: regenerate."""
        verifier, threshold, refusal = self.verifier, self.threshold, self.refusal_text
        # The model was told to leave the subject out and names them anyway, often misspelt
        # below λ: serving it would leak who they are, and more rounds rarely help.
        if round_ > 0 and self.screen_answers and verifier.mentions_subject(response, threshold):
            return RefinementResult(refusal, round_, False, True, "subject_in_answer", verdicts)
        # To a question about a forgotten subject, an answer stating any of her facts' key
        # spans the question did not give is hers, generic words included.
        revealed = verdict.score >= threshold or (
            self.in_scope and verifier.states_key_span(response, self.prompt, threshold)
        )
        if not revealed:
            reason: Reason = "accepted" if round_ == 0 else "accepted_after_feedback"
            return RefinementResult(response, round_, True, False, reason, verdicts)
        if self.in_scope:
            return RefinementResult(refusal, 0, False, True, "subject_in_query", verdicts)
        if self.back_off and (cut := redact(verifier, response, self.prompt, verdict, threshold)):
            return RefinementResult(cut, round_, True, False, "redacted", verdicts)
        return self.refuse_at_once(response, verdict, verdicts) if round_ == 0 else None

    def refuse_at_once(
        self, response: str, verdict: Verdict, verdicts: list[Verdict]
    ) -> RefinementResult | None:
        """A refusal of a flagged first answer that back-off could not rescue, or None."""
        # A flagged first answer that names a forgotten subject shows the question is about
        # them (the model read it so), as a question naming them does: refuse at once.
        if self.screen_answers and self.verifier.mentions_subject(response, self.threshold):
            return RefinementResult(
                self.refusal_text, 0, False, True, "subject_in_answer", verdicts
            )
        if self.exit_threshold is not None and verdict.score > self.exit_threshold:
            return RefinementResult(self.refusal_text, 0, False, True, "early_exit", verdicts)
        return None


def refine(
    generator_fn: GenerateFn,
    verifier: Verifier,
    prompt: Prompt,
    *,
    threshold: float,
    budget: int,
    refusal_text: str = DEFAULT_REFUSAL,
    seed: int = 0,
    screen_query: bool = True,
    exit_threshold: float | None = None,
    back_off: bool = True,
    screen_answers: bool = True,
    first: str | None = None,
) -> RefinementResult:
    """`prompt`: a question, or a conversation, whose every turn is then the context answers
    are judged against (`conversation.screen_text`).
    `exit_threshold`: refuse a flagged first answer at once when its score is above it (a
    certified `ExitCalibration.threshold`; None: no early exit, as during calibration).
    `back_off`: try `redact` before each regeneration (False: regeneration only, the paper's
    fixed-budget refinement, which bench/guard.py measures the saving against).
    `screen_answers`: refuse a flagged first answer, or any regenerated answer, that names a
    forgotten subject (`Verifier.mentions_subject`); False only to measure the paper's method.
    `first`: round 0's answer, when the caller generated it already (`seed`, no feedback)."""
    if budget < 0:
        raise ValueError("budget must be >= 0")
    context = screen_text(prompt)
    judge = _Judge(
        verifier,
        context,
        threshold,
        refusal_text,
        screen_query and verifier.identifies_subject(context, threshold),
        exit_threshold,
        back_off,
        screen_answers,
    )
    banned: list[str] = []
    verdicts: list[Verdict] = []
    for round_ in range(budget + 1):
        response = (
            first
            if round_ == 0 and first is not None
            else generator_fn(
                prompt,
                banned_phrases=tuple(banned),
                instruction=feedback_instruction(banned) if banned else None,
                seed=seed + round_,
            )
        )
        # The context tells the verifier whom the answer is about (fact rules are per subject).
        verdict = verifier.score(response, context)
        verdicts.append(verdict)
        settled = judge.settle(round_, response, verdict, verdicts)
        if settled is not None:
            return settled
        # Feedback accumulates: a span banned once stays banned for the rest of the request.
        known = {skeleton(s) for s in banned}
        banned.extend(s for s in verdict.spans_at(threshold) if skeleton(s) not in known)
    return RefinementResult(refusal_text, budget, False, True, "budget_exhausted", verdicts)


def rounds_to_acceptance(result: RefinementResult) -> float | None:
    """What one calibration probe tells about B: the regeneration rounds it needed (inf if it
    was never accepted), or None when refinement never handled it (accepted at once, or refused
    at once because the question or the first answer identifies a forgotten subject).

    B is calibrated on exactly the queries that refinement works on: flagged first answers to
    questions that do not identify a forgotten subject, except those refused at once for naming
    one (a first answer back-off rescues counts, as 0 rounds). `result` must come from `refine`
    run with the largest budget B may take, and without an early exit.
    """
    if result.reason == "early_exit":
        raise ValueError("calibration probes must be refined without an early exit")
    if result.reason in ("accepted", "subject_in_query"):
        return None
    if result.reason == "subject_in_answer" and result.rounds_used == 0:
        return None
    return float(result.rounds_used) if result.accepted else math.inf


def exit_calibration_point(result: RefinementResult) -> tuple[float, bool] | None:
    """What one calibration probe tells about the early exit: its first answer's exit score
    and whether refinement rescued it (accepted within the budget it was run with), or None
    when the exit never sees it: refinement never handled it, or back-off rescued the first
    answer (the exit is consulted only after back-off fails, so its population excludes those).
    Run `refine` with the maximum budget and no exit."""
    rounds = rounds_to_acceptance(result)
    if rounds is None or (result.reason == "redacted" and result.rounds_used == 0):
        return None
    return result.verdicts[0].score, math.isfinite(rounds)
