"""Keep banned spans out of a generation, whatever tokens the model would spell them with.

Matching happens on skeletons (folded letters and digits, see `normalize.skeleton`), not on token
ids: a span can be tokenised many ways ("Yun-Hwa", " yun", "-H", "wa", …), and capitalisation,
leading spaces and punctuation variants all share one skeleton. At each step the processor looks
at the text generated so far and bans every token that would *complete* a banned span, i.e.

- the text ends with the first k characters of the span, starting at a word start, and the
  token's skeleton begins with the remaining characters; or
- the token itself contains the whole span at a word start.

Tokens that only extend a prefix stay allowed, so the model can still write "Yun" in another
word; it cannot finish the span. A span must start at a word start (so banning "Li" leaves
"Emily" alone) but may end inside a word: banning is conservative, so "Li" also stops "Like"
and "Taipei" stops "Taipeis".
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from models.generative.normalize import skeleton, words

MIN_SPAN_CHARS = 2


class TokenIndex:
    """Skeleton of every vocabulary token, with prefix lookup. Built once per tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        size = len(tokenizer)
        special = {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
        special |= {int(i) for i in tokenizer.all_special_ids}
        texts: list[str] = tokenizer.batch_decode([[i] for i in range(size)])
        self.skeletons: list[str] = []
        # Offsets in the token's skeleton where a word starts *inside the token itself*: 0 when
        # the token begins with a separator (" Yun"), later offsets for multi-word tokens.
        self.word_starts: list[tuple[int, ...]] = []
        for token_id, text in enumerate(texts):
            if token_id in special:
                self.skeletons.append("")
                self.word_starts.append(())
                continue
            self.skeletons.append(skeleton(text))
            self.word_starts.append(_inner_word_starts(text))
        order = sorted((s, i) for i, s in enumerate(self.skeletons) if s)
        self._sorted = [s for s, _ in order]
        self._ids = [i for _, i in order]
        self._containing: dict[str, frozenset[int]] = {}

    def starting_with(self, prefix: str) -> list[int]:
        lo = bisect.bisect_left(self._sorted, prefix)
        hi = bisect.bisect_left(self._sorted, prefix + "\U0010ffff")
        return self._ids[lo:hi]

    def containing_at_word_start(self, span: str) -> frozenset[int]:
        """Tokens that spell the whole span from a word start inside the token."""
        if span not in self._containing:
            pairs = zip(self.skeletons, self.word_starts, strict=True)
            self._containing[span] = frozenset(
                i
                for i, (skel, starts) in enumerate(pairs)
                if span in skel and any(skel.startswith(span, o) for o in starts)
            )
        return self._containing[span]


def _inner_word_starts(text: str) -> tuple[int, ...]:
    starts = []
    offset = 0
    previous_alnum = True  # a token's first letters may continue the previous token's word
    for ch in text:
        alnum = ch.isalnum()
        if alnum and not previous_alnum:
            starts.append(offset)
        if alnum:
            offset += len(skeleton(ch)) or 1
        previous_alnum = alnum
    return tuple(starts)


class BannedSpansProcessor(LogitsProcessor):
    """Sets to −inf the logits of every token that would complete a banned span."""

    def __init__(
        self, tokenizer: Any, index: TokenIndex, spans: Sequence[str], prompt_length: int
    ) -> None:
        self.tokenizer = tokenizer
        self.index = index
        self.prompt_length = prompt_length
        self.spans = sorted({s for s in map(skeleton, spans) if len(s) >= MIN_SPAN_CHARS})

    def banned_ids(self, generated_text: str) -> set[int]:
        parts = words(generated_text)
        text = "".join(parts)
        starts = set()
        offset = 0
        for part in parts:
            starts.add(offset)
            offset += len(part)
        at_boundary = not generated_text or not generated_text[-1].isalnum()
        banned: set[int] = set()
        for span in self.spans:
            banned |= self.index.containing_at_word_start(span)
            if at_boundary:
                # The next token starts a word: any token spelling the whole span from its start.
                banned.update(self.index.starting_with(span))
            for k in range(1, len(span)):
                if text.endswith(span[:k]) and (len(text) - k) in starts:
                    banned.update(self.index.starting_with(span[k:]))
        return banned

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.spans:
            return scores
        scores = scores.clone()  # type: ignore[assignment]
        for row in range(input_ids.shape[0]):
            generated = input_ids[row, self.prompt_length :].tolist()
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            banned = self.banned_ids(text)
            if banned:
                scores[row, sorted(banned)] = float("-inf")
        return scores
