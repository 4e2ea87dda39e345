"""The caching embedder embeds each text once and evicts the least recently used."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.generative.embedder import CachingEmbedder, HashingEmbedder, Vectors


class CountingEmbedder:
    def __init__(self) -> None:
        self.inner = HashingEmbedder()
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts += texts
        return self.inner.embed(texts)


def test_caching_embedder_embeds_each_text_once_and_evicts_oldest() -> None:
    counting = CountingEmbedder()
    cache = CachingEmbedder(counting, capacity=3)
    first = cache.embed(["a b", "c d", "a b"])
    assert counting.texts == ["a b", "c d"]
    np.testing.assert_array_equal(first, HashingEmbedder().embed(["a b", "c d", "a b"]))
    cache.embed(["c d", "e f", "g h"])  # "a b" is now the least recently used: evicted
    assert counting.texts == ["a b", "c d", "e f", "g h"]
    cache.embed(["a b"])
    assert counting.texts[-1] == "a b"
    assert cache.embed([]).shape[0] == 0
