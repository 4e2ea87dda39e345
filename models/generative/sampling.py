"""Sampling with a private random stream, and stop strings.

Transformers samples with the process-wide torch RNG. A server answers several requests at once
from threads, and two sampled generations sharing that RNG (or one re-seeding it while another
samples) make "the same seed gives the same text" false. `SeededSampler` draws the next token
itself, from the temperature- and nucleus-shaped distribution transformers would sample from,
with a `torch.Generator` of its own; generation then runs greedily over a distribution that
puts all its mass on the drawn token. The same seed gives the same text whatever else runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria


class SeededSampler(LogitsProcessor):
    """Draws each next token (temperature, then top-p) from a private generator, and leaves
    only that token possible. Put it last: after the processors that ban tokens."""

    def __init__(self, seed: int, temperature: float, top_p: float) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be positive (0 means greedy: no sampler)")
        if not 0 < top_p <= 1:
            raise ValueError("top_p must lie in (0, 1]")
        self.temperature = temperature
        self.top_p = top_p
        self.generator = torch.Generator().manual_seed(seed)

    def distribution(self, scores: torch.Tensor) -> torch.Tensor:
        """Next-token probabilities per row after temperature and nucleus (top-p) filtering."""
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
            # Drop a token when the tokens ranked above it already reach top_p (the first one
            # always stays).
            drop = (cumulative - torch.softmax(ordered, dim=-1)) >= self.top_p
            logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
        return torch.softmax(logits, dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = self.distribution(scores)
        picked = torch.multinomial(probs, num_samples=1, generator=self.generator)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, picked, 0.0)
        return out  # type: ignore[return-value]


class StopStrings(StoppingCriteria):
    """Stops once the generated text contains any of `stops` (OpenAI's `stop`)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        done = []
        for row in input_ids:
            text = self.tokenizer.decode(row[self.prompt_length :], skip_special_tokens=True)
            done.append(cut_at_stop(text, self.stops) != text)
        return torch.tensor(done, dtype=torch.bool)


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to (not including) the earliest stop string in it."""
    positions = [i for s in stops if s and (i := text.find(s)) >= 0]
    return text[: min(positions)] if positions else text
