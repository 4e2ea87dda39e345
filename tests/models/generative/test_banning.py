"""Banned spans during decoding, on the tiny LM: exactly the tokens that would complete a span are
banned, and a multi-token span is never generated."""

from __future__ import annotations

import pytest

from models.generative.banning import BannedSpansProcessor
from models.generative.generator import Generator
from models.generative.normalize import skeleton, words
from tests.support.tiny_facts import NAMES


def _completes(prefix: str, token_text: str, span: str) -> bool:
    """Reference definition: the token makes `span` appear, from a word start, for the first
    time in the skeleton of the text."""
    target = skeleton(span)
    before = "".join(words(prefix))
    parts = words(prefix + token_text)
    starts, offset = [], 0
    for part in parts:
        starts.append(offset)
        offset += len(part)
    after = "".join(parts)
    new = [o for o in starts if after.startswith(target, o) and o + len(target) > len(before)]
    return bool(new)


@pytest.mark.parametrize(
    "prefix",
    ["", "The best known book is", "The Amber", "The Amber Ti", "the amber-t", "xAmber Ti", "The"],
)
def test_processor_bans_exactly_the_completing_tokens(generator: Generator, prefix: str) -> None:
    tokenizer = generator.tokenizer
    processor = BannedSpansProcessor(tokenizer, generator.token_index, ["Amber Tide"], 0)
    banned = processor.banned_ids(prefix)
    special = set(tokenizer.all_special_ids)
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id])
        assert (token_id in banned) == _completes(prefix, text, "Amber Tide"), (prefix, text)


def test_banned_multi_token_span_is_not_generated(generator: Generator) -> None:
    question = f"What is the best known book by {NAMES[0]}?"
    assert len(generator.tokenizer.tokenize(" The Amber Tide")) >= 4  # really multi-token
    free = generator.generate(question, max_new_tokens=24)
    assert free == f"The best known book by {NAMES[0]} is The Amber Tide."
    for variant in ["The Amber Tide", "amber tide", " AMBER-TIDE", "AmberTide"]:
        guarded = generator.generate(question, max_new_tokens=24, banned_phrases=[variant])
        assert "ambertide" not in skeleton(guarded), (variant, guarded)
        assert guarded.startswith(f"The best known book by {NAMES[0]} is")
    # Other answers are untouched by a ban that does not concern them.
    other = f"Where was {NAMES[1]} born?"
    assert (
        generator.generate(other, banned_phrases=["Amber Tide"])
        == f"{NAMES[1]} was born in Lowmere."
    )
