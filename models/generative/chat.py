"""One guarded chat answer (a "choice"), whole or streamed, whatever weights generate it.

Whole: `refine` on the conversation (every turn is the context the verifier judges the answer
against, `conversation`), decoding as the caller asked (greedy, or sampled under a seed).

Streamed: nothing unscreened reaches the client, and a stream serves what the same request
without streaming would, except where text already went out (below).

- A conversation that already identifies a forgotten subject (by name, attributes or an
  earlier turn) is answered whole: decoded unseen, judged by `refine` exactly as without
  streaming, and sent in one piece, so with the same seed it gets the same answer streamed or
  not (a stream cannot take text back, and `refine` refuses a flagged answer to such a
  conversation whole). Decoding stops early when the answer's start already settles the
  refusal: it names a forgotten subject at λ, or states a key span of hers no turn gave; both
  only grow as words are added (`SentenceScreen.settles_refusal`).
- Otherwise decoded text goes out a few words at a time (`Release`): at each release point the
  whole answer so far is screened as a whole answer would be (`SentenceScreen`), and only then
  does the new text go out, less a held-back tail that could be the start of a forgotten key
  span or name of the active rules (`Verifier.span_prefixes`), so that no part of a span goes
  out before the text that completes it has been screened. A word that resembles a forgotten
  name, misspelt or partial (`Verifier.resembles_name`), is held with all that follows it until
  the whole answer has been screened. When a screen fails, nothing more is sent and decoding
  stops:

  - when nothing has gone out yet, the rest of the first answer is decoded unseen and the whole
    answer goes through `refine` with it as round 0 (`first`), exactly as the same request
    without streaming would: accepted, backed off, regenerated or refused, and sent in one
    piece;
  - when earlier text has gone out, it stays accepted (each release was screened with all that
    preceded it), the refusal text follows, and the choice ends with finish reason
    `content_filter` (reason `withheld`). A non-streamed answer to the same request may differ
    here: it would have been backed off, regenerated or refused as a whole.

The first text waits for the first whole word (`Guard.opening` "whole_word"): the token after
it shows where it ends, one more decoding step before anything goes out. With "first_piece",
the first decoded piece may go out before its word ends, screened, when no word in it could
begin a forgotten key span or a word of a forgotten name, or resembles a forgotten name
(`Release.opening`): the same words the release points hold back. If the first sentence then
fails its screen, the answer is handled as when nothing was sent, and served if it begins with
that piece; otherwise the refusal text follows the piece, cut off by an ellipsis ("The… I'm
sorry, …"; `withheld`).

The screen is prepared (whom the conversation is about) while the model decodes the first
words, and the verifier keeps the parsed conversation for the next screens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from models.generative.conversation import Conversation, Prompt
from models.generative.generator import Completion, Decoding, Generator, TextStream, kept_text
from models.generative.normalize import SENTENCE_BREAK, fold
from models.generative.readings import letters_for_digits, plain_reading
from models.generative.refinement import Reason, refine
from models.generative.verifier import Verifier

FinishReason = Literal["stop", "length", "content_filter"]
ChoiceReason = Reason | Literal["no_rules", "withheld"]
# How a stream's first text may go out: after its first whole word, or as its first piece.
Opening = Literal["whole_word", "first_piece"]


@dataclass(frozen=True)
class Guard:
    """The active rules as one answer applies them."""

    verifier: Verifier
    threshold: float
    budget: int
    refusal_text: str
    exit_threshold: float | None = None
    opening: Opening = "whole_word"


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
    served attempt's finish reason and length come from it), each attempt cut short ending
    where `Release.cut_end` says."""

    def __init__(
        self, generator: Generator, decoding: Decoding, first: Completion | None, release: Release
    ) -> None:
        self.generator = generator
        self.decoding = decoding
        self.last = first
        self.release = release

    def kept(self, done: Completion) -> str:
        return kept_text(done, self.release.cut_end)

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
        return self.kept(self.last)


def _refined(
    generator: Generator,
    guard: Guard,
    conversation: Conversation,
    decoding: Decoding,
    seed: int,
    first: Completion | None = None,
) -> Choice:
    recorder = _Recorder(generator, decoding, first, Release(guard.verifier))
    result = refine(
        recorder,
        guard.verifier,
        conversation,
        threshold=guard.threshold,
        budget=guard.budget,
        refusal_text=guard.refusal_text,
        seed=seed,
        exit_threshold=guard.exit_threshold,
        first=None if first is None else recorder.kept(first),
    )
    last = recorder.last
    tokens = last.completion_tokens if last is not None else 0
    # An answer served as generated ends as its decoding did; one cut short by back-off, by a
    # held tail, or replaced by the refusal text ends by the content filter (OpenAI's word).
    as_generated = (
        result.reason in ("accepted", "accepted_after_feedback")
        and last is not None
        and recorder.kept(last) == last.text
    )
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

    def settles_refusal(self, text: str, new: int, *, spans: bool) -> bool:
        """For a conversation that identifies a forgotten subject: does `text`, the answer's
        start up to a whole word, already settle that `refine` will refuse the whole answer?
        It does when `text` names a forgotten subject at λ or (`spans`) states a key span of
        hers that no turn gave: both only grow as words are added, so the whole answer scores
        at least as high, and `refine` refuses a flagged answer to such a conversation at
        once. `new`: where the words not checked before begin; a name is looked for only in
        the windows that reach them (a name has at most `name_length` words)."""
        verifier, threshold = self.guard.verifier, self.guard.threshold
        starts = [m.start() for m in _WORD_RUN.finditer(text)]
        first_new = next((i for i, at in enumerate(starts) if at >= new), len(starts))
        reach = starts[max(0, first_new - verifier.name_length())] if starts else 0
        if verifier.names_in(text[reach:], threshold):
            return True
        return spans and verifier.states_key_span(text, self.context, threshold)


# After the first release (as early as one word: the time to the first text), the next one
# waits for this many new words or the end of a sentence: each release costs a screen.
RELEASE_WORDS = 4
# Between a first piece and the refusal that replaces the rest of its answer.
PIECE_CUT = "… "
_WORD_RUN = re.compile(r"[^\W_]+")


class Release:
    """Where a stream may release decoded text: after a whole word (whitespace follows it), and
    only up to a tail that could begin a forgotten key span or name (`Verifier.span_prefixes`,
    folded words): "…was born in Port" holds "Port" back while "Port Ardent" is a key span.

    A word that resembles a word of a forgotten name, misspelt or partial ("Velamor", "Quint";
    `Verifier.resembles_name`), is held back with everything after it until the answer ends,
    and then goes out only if the whole answer passes the screen: the screen scores a misspelt
    name by how close the whole name comes, which the next words decide, and a fact in a later
    sentence is attributed to her through it. A trailing run of single letters ("P-o-r-t A-r")
    is a word being spelled out, which the screen reads joined once it ends: held back too."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.prefixes = verifier.span_prefixes()
        self.longest = max((len(p) for p in self.prefixes), default=0)
        self._by_lead: dict[tuple[str, ...], frozenset[str]] | None = None

    def opening(self, text: str) -> int:
        """How much of `text`, the decoded start of an answer before its first word ended, may
        go out as the stream's first text (`Guard.opening` "first_piece"): all of it when no
        word in it could begin what `point` holds back (a forgotten key span, a word of a
        forgotten name), nor resembles a forgotten name; else nothing ("L" waits while a
        forgotten name has a word beginning with "L")."""
        start = text.lstrip()
        if not start or _whole_words(start):
            return 0
        found = [_plain_word(m.group()) for m in _WORD_RUN.finditer(start)]
        starts = self.verifier.span_word_starts()
        if any(w in starts or self.verifier.resembles_name(w) for w in found):
            return 0
        return len(text)

    def point(self, text: str, *, final: bool) -> int:
        """How much of `text` (the decoded text not yet sent) may go out once screened."""
        if final:
            return len(text)
        end = _whole_words(text)
        found = [(m.start(), _plain_word(m.group())) for m in _WORD_RUN.finditer(text, 0, end)]
        named = next((at for at, word in found if self.verifier.resembles_name(word)), end)
        named = min(named, _spelled_tail(found, end))
        for size in range(min(self.longest, len(found)), 0, -1):
            if tuple(w for _, w in found[-size:]) in self.prefixes:
                return min(named, found[-size][0])
        return named

    def cut_end(self, text: str) -> int:
        """How much of `text`, an answer whose decoding was cut short (a stop string or the
        token limit: `Completion.cut_short`), may go out: all but a tail that could begin a
        forgotten key span or name, its last word possibly cut inside ("…born in Port Arde"
        ends before "Port"), or a last word that resembles a forgotten name. Nothing after the
        cut will show it was something else, and a client chooses where to cut: a stop string
        "nt" would otherwise have "Port Arde" go out, screened as harmless. A trailing run of
        single letters, a word being spelled out, is held back too."""
        end = len(text.rstrip())
        runs = list(_WORD_RUN.finditer(text, 0, end))
        found = [(m.start(), _plain_word(m.group())) for m in runs]
        # A word being spelled out letter by letter may be a forgotten one, mark or not.
        spelled = _spelled_tail(found, len(text))
        if not runs or runs[-1].end() < end:
            return spelled  # it ends in a mark after its last word: no word was cut
        ends = self._ends()
        # The cut word read both ways: "4rd" may be an ordinal or the start of "4rd3nt".
        lasts = {found[-1][1], fold(letters_for_digits(runs[-1].group()))}
        for size in range(min(self.longest, len(found)), 0, -1):
            whole = tuple(w for _, w in found[-size:-1])
            if any(w.startswith(last) for w in ends.get(whole, ()) for last in lasts):
                return min(found[-size][0], spelled)
        if self.verifier.resembles_name(found[-1][1]):
            return min(found[-1][0], spelled)
        return spelled

    def _ends(self) -> dict[tuple[str, ...], frozenset[str]]:
        """For each held-back run but its last word, the words that can end it."""
        if self._by_lead is None:
            lead: dict[tuple[str, ...], set[str]] = {}
            for run in self.prefixes:
                lead.setdefault(run[:-1], set()).add(run[-1])
            self._by_lead = {k: frozenset(v) for k, v in lead.items()}
        return self._by_lead


def _plain_word(word: str) -> str:
    """A word as the screen reads it plainly, folded: "P0rt" and "Pоrt" (Cyrillic о) are
    "port" (models.generative.readings)."""
    return fold(plain_reading(word))


def _spelled_tail(found: Sequence[tuple[int, str]], default: int) -> int:
    """Where a trailing run of two or more single letters starts ("…is P-o-r-t A-r"): a word
    being spelled out, which may turn out forgotten (models.generative.readings reads it
    joined); `default` without one."""
    start = len(found)
    while start and len(found[start - 1][1]) == 1 and found[start - 1][1].isalpha():
        start -= 1
    return found[start][0] if len(found) - start >= 2 else default


def _whole_words(text: str) -> int:
    """Where the whole words of `text` end: after its last blank."""
    return max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1


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
        # Decoding starts first, in a thread of its own: the screen is prepared (whom the
        # conversation is about) while the model decodes the first words.
        stream = self.generator.stream(self.conversation, self.decoding, seed=self.seed)
        try:
            if self.guard is None:
                yield from self._unguarded(stream)
                return
            screen = SentenceScreen(self.guard, self.conversation)
            if screen.in_scope:
                yield from self._whole(stream, screen)
            else:
                yield from self._screened(stream, screen)
        finally:  # the client may leave mid-stream: stop decoding for nobody
            stream.close()

    def _unguarded(self, stream: TextStream) -> Iterator[str]:
        pieces = []
        for piece in stream:
            pieces.append(piece)
            yield piece
        self.choice = Choice(
            "".join(pieces), stream.finish_reason, False, "no_rules", 0, stream.completion_tokens
        )

    def _whole(self, stream: TextStream, screen: SentenceScreen) -> Iterator[str]:
        """A conversation about a forgotten subject: the answer is judged whole, as without
        streaming, and sent in one piece (a stream cannot take back text, and `refine` refuses
        a flagged answer to such a conversation whole). Decoding stops as soon as the answer's
        start settles the refusal (`SentenceScreen.settles_refusal`)."""
        guard = screen.guard
        text, checked, spans_checked = "", 0, 0
        pieces = iter(stream)
        for piece in pieces:
            text += piece
            end = _whole_words(text)
            if end <= checked:
                continue
            # Names at every new word (cheap, and they settle most refusals within the first
            # words); key spans, which need the whole answer so far, at the release cadence.
            spans = not spans_checked or _worth_a_screen(text[spans_checked:end])
            settled = screen.settles_refusal(text[:end], checked, spans=spans)
            checked, spans_checked = end, end if spans else spans_checked
            if settled:
                stream.close()
                for _ in pieces:  # let the decoding thread end
                    pass
                self.choice = Choice(
                    guard.refusal_text, "content_filter", True, "subject_in_query", 0,
                    stream.completion_tokens,
                )  # fmt: skip
                yield guard.refusal_text
                return
        first = Completion(
            text.strip(),
            stream.finish_reason,
            stream.prompt_tokens,
            stream.completion_tokens,
            stream.cut_short,
        )
        self.choice = _refined(
            self.generator, guard, self.conversation, self.decoding, self.seed, first
        )
        yield self.choice.text

    def _screened(self, stream: TextStream, screen: SentenceScreen) -> Iterator[str]:
        release = Release(screen.guard.verifier)
        first_piece = screen.guard.opening == "first_piece"
        sent, unsent = "", ""
        opened = False  # all that went out is a first piece, sent before its word ended
        pieces = iter(stream)
        while True:
            piece = next(pieces, None)
            unsent += piece or ""
            final = piece is None
            # A word begun by the first piece is judged whole: with that piece before it.
            carry = sent[_whole_words(sent) :]
            if final and stream.cut_short:
                cut = max(0, release.cut_end(carry + unsent) - len(carry))
            else:
                cut = max(0, release.point(carry + unsent, final=final) - len(carry))
            opening = first_piece and not sent and not cut and not final
            cut = release.opening(unsent) if opening else cut
            ready = unsent[:cut]
            if ready.strip() and (final or not sent or _worth_a_screen(ready)):
                # Screened with the held tail's whole words too: a word goes out only once
                # the words that could complete a name or span with it were screened with it.
                whole = final or opening
                screened = unsent if whole else unsent[: _whole_words(unsent)]
                if not screen.accepts(sent + screened):
                    yield from self._withheld(stream, pieces, sent, unsent, opened=opened)
                    return
                yield ready
                sent, unsent, opened = sent + ready, unsent[cut:], opening
            if final:
                break
        # A tail held back at a cut (`Release.cut_end`) never goes: the filter ended the answer.
        finish: FinishReason = "content_filter" if unsent.strip() else stream.finish_reason
        self.choice = Choice(sent, finish, False, "accepted", 0, stream.completion_tokens)

    def _withheld(
        self, stream: TextStream, pieces: Iterator[str], sent: str, unsent: str, *, opened: bool
    ) -> Iterator[str]:
        """After a sentence failed the screen: `unsent` is everything decoded but not sent;
        `opened`: all of `sent` is a first piece (`Release.opening`)."""
        guard = self.guard
        assert guard is not None
        if sent and not opened:
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
        # Nothing sent yet, or only a first piece: decode the rest of the first answer unseen
        # and judge it whole, exactly as without streaming.
        rest = (sent + unsent + "".join(pieces)).strip()
        first = Completion(
            rest,
            stream.finish_reason,
            stream.prompt_tokens,
            stream.completion_tokens,
            stream.cut_short,
        )
        choice = _refined(self.generator, guard, self.conversation, self.decoding, self.seed, first)
        piece = sent.lstrip()
        if choice.text.startswith(piece):  # nothing sent, or the served answer begins with it
            self.choice = choice
            yield choice.text[len(piece) :]
            return
        # The piece is the start of a word the answer never finished: an ellipsis marks it
        # cut off ("Th… I'm sorry, …"), where a bare space would read as a word ("Th I'm").
        refusal = PIECE_CUT + guard.refusal_text
        self.choice = Choice(
            sent + refusal, "content_filter", False, "withheld", 0, choice.completion_tokens
        )
        yield refusal


def _worth_a_screen(ready: str) -> bool:
    """After the first release: enough new words, or a sentence ended."""
    return len(_WORD_RUN.findall(ready)) >= RELEASE_WORDS or bool(SENTENCE_BREAK.search(ready))
