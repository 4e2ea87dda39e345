"""One guarded chat answer (a "choice"), whole or streamed, whatever weights generate it.

Whole: `refine` on the conversation (every turn is the context the verifier judges the answer
against, `conversation`), decoding as the caller asked (greedy, or sampled under a seed).

Streamed: nothing unscreened reaches the client. Decoded text is held until a sentence ends
(`normalize.sentences`' boundaries), and the answer so far with that sentence is screened as a
whole answer would be (`SentenceScreen`); only then does the sentence go out. A sentence that
fails is never sent, and decoding stops:

- when nothing has gone out yet, the rest of the first answer is decoded unseen and the whole
  answer goes through `refine` with it as round 0 (`first`), exactly as the same request without
  streaming would: accepted, backed off, regenerated or refused, and sent in one piece;
- when earlier sentences have gone out, they stay accepted (each was screened with all that
  preceded it), the refusal text follows, and the choice ends with finish reason
  `content_filter` (reason `withheld`). A non-streamed answer to the same request may differ
  here: it would have been backed off, regenerated or refused as a whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from models.generative.conversation import Conversation, Prompt
from models.generative.generator import Completion, Decoding, Generator, TextStream
from models.generative.normalize import SENTENCE_BREAK
from models.generative.refinement import Reason, refine
from models.generative.verifier import Verifier

FinishReason = Literal["stop", "length", "content_filter"]
ChoiceReason = Reason | Literal["no_rules", "withheld"]


@dataclass(frozen=True)
class Guard:
    """The active rules as one answer applies them."""

    verifier: Verifier
    threshold: float
    budget: int
    refusal_text: str
    exit_threshold: float | None = None


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: FinishReason
    refused: bool
    reason: ChoiceReason
    rounds_used: int
    completion_tokens: int


class _Recorder:
    """A `GenerateFn` over `Generator.complete` that keeps the last attempt's completion (the
    served attempt's finish reason and length come from it)."""

    def __init__(self, generator: Generator, decoding: Decoding, first: Completion | None) -> None:
        self.generator = generator
        self.decoding = decoding
        self.last = first

    def __call__(
        self,
        prompt: Prompt,
        *,
        banned_phrases: Sequence[str],
        instruction: str | None,
        seed: int | None,
    ) -> str:
        self.last = self.generator.complete(
            prompt, self.decoding, banned_phrases=banned_phrases, instruction=instruction, seed=seed
        )
        return self.last.text


def _refined(
    generator: Generator,
    guard: Guard,
    conversation: Conversation,
    decoding: Decoding,
    seed: int,
    first: Completion | None = None,
) -> Choice:
    recorder = _Recorder(generator, decoding, first)
    result = refine(
        recorder,
        guard.verifier,
        conversation,
        threshold=guard.threshold,
        budget=guard.budget,
        refusal_text=guard.refusal_text,
        seed=seed,
        exit_threshold=guard.exit_threshold,
        first=None if first is None else first.text,
    )
    last = recorder.last
    tokens = last.completion_tokens if last is not None else 0
    # An answer served as generated ends as its decoding did; one cut short by back-off or
    # replaced by the refusal text ends by the content filter (OpenAI's word for it).
    as_generated = result.reason in ("accepted", "accepted_after_feedback") and last is not None
    finish: FinishReason = last.finish_reason if as_generated and last else "content_filter"
    return Choice(
        result.response, finish, result.refused, result.reason, result.rounds_used, tokens
    )


def answer(
    generator: Generator,
    guard: Guard | None,
    conversation: Conversation,
    decoding: Decoding,
    *,
    seed: int,
) -> Choice:
    """One whole answer: unguarded when no rule is in force, else through `refine`."""
    if guard is None:
        done = generator.complete(conversation, decoding, seed=seed)
        return Choice(done.text, done.finish_reason, False, "no_rules", 0, done.completion_tokens)
    return _refined(generator, guard, conversation, decoding, seed)


class SentenceScreen:
    """Would this text, as the whole answer so far, be accepted at round 0? The same test
    `refine` applies to a first answer: flagged at λ, or, when the conversation identifies a
    forgotten subject, stating a key span of hers that no turn gave."""

    def __init__(self, guard: Guard, conversation: Conversation) -> None:
        self.guard = guard
        self.context = conversation.context()
        self.in_scope = guard.verifier.identifies_subject(self.context, guard.threshold)

    def accepts(self, text: str) -> bool:
        verifier, threshold = self.guard.verifier, self.guard.threshold
        if verifier.score(text, self.context).score >= threshold:
            return False
        return not (self.in_scope and verifier.states_key_span(text, self.context, threshold))


def split_sentence(buffer: str) -> tuple[str, str] | None:
    """(the first complete sentence with the break after it, the rest), or None while no
    sentence has ended (a break needs the character after the full stop)."""
    match = SENTENCE_BREAK.search(buffer)
    if match is None:
        return None
    return buffer[: match.end()], buffer[match.end() :]


class GuardedStream:
    """The pieces of one streamed answer (see the module docstring); `choice` is set once the
    iteration ends."""

    def __init__(
        self,
        generator: Generator,
        guard: Guard | None,
        conversation: Conversation,
        decoding: Decoding,
        *,
        seed: int,
    ) -> None:
        self.generator = generator
        self.guard = guard
        self.conversation = conversation
        self.decoding = decoding
        self.seed = seed
        self.choice: Choice | None = None

    def __iter__(self) -> Iterator[str]:
        stream = self.generator.stream(self.conversation, self.decoding, seed=self.seed)
        try:
            yield from self._pieces(stream)
        finally:  # the client may leave mid-stream: stop decoding for nobody
            stream.close()

    def _pieces(self, stream: TextStream) -> Iterator[str]:
        if self.guard is None:
            pieces = []
            for piece in stream:
                pieces.append(piece)
                yield piece
            self.choice = Choice(
                "".join(pieces), stream.finish_reason, False, "no_rules", 0,
                stream.completion_tokens,
            )  # fmt: skip
            return
        yield from self._screened(stream, self.guard)

    def _screened(self, stream: TextStream, guard: Guard) -> Iterator[str]:
        screen = SentenceScreen(guard, self.conversation)
        sent, buffer = "", ""
        pieces = iter(stream)
        while True:
            piece = next(pieces, None)
            buffer += piece or ""
            for sentence in _sentences(buffer, final=piece is None):
                if not screen.accepts(sent + sentence):
                    yield from self._withheld(stream, pieces, sent, buffer)
                    return
                yield sentence
                sent += sentence
                buffer = buffer[len(sentence) :]
            if piece is None:
                break
        self.choice = Choice(
            sent, stream.finish_reason, False, "accepted", 0, stream.completion_tokens
        )

    def _withheld(
        self, stream: TextStream, pieces: Iterator[str], sent: str, unsent: str
    ) -> Iterator[str]:
        """After a sentence failed the screen: `unsent` is everything decoded but not sent."""
        guard = self.guard
        assert guard is not None
        if sent:
            # Screened sentences are out: they stay, the one that failed never goes.
            stream.close()
            for _ in pieces:  # let the decoding thread end
                pass
            refusal = guard.refusal_text if sent[-1:].isspace() else " " + guard.refusal_text
            yield refusal
            self.choice = Choice(
                sent + refusal, "content_filter", False, "withheld", 0, stream.completion_tokens
            )
            return
        # Nothing sent yet: decode the rest of the first answer unseen and judge it whole,
        # exactly as without streaming.
        rest = (unsent + "".join(pieces)).strip()
        first = Completion(
            rest, stream.finish_reason, stream.prompt_tokens, stream.completion_tokens
        )
        self.choice = _refined(
            self.generator, guard, self.conversation, self.decoding, self.seed, first
        )
        yield self.choice.text


def _sentences(buffer: str, *, final: bool) -> list[str]:
    """The complete sentences at the start of `buffer`; at the end of decoding, the rest too."""
    out = []
    while (split := split_sentence(buffer)) is not None:
        sentence, buffer = split
        out.append(sentence)
    if final and buffer.strip():
        out.append(buffer)
    return out
