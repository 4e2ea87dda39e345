"""Loaded generators, embedders and verifiers, shared by the API and workers of one process."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

from models.generative.embedder import CachingEmbedder, Embedder, HashingEmbedder
from models.generative.rules import RuleSet
from models.generative.verifier import Verifier

T = TypeVar("T")


class LoadedCache:
    """Small keyed cache with one loader per key at a time."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: dict[Any, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                value: T = self._items[key]
                return value
            value = load()
            if len(self._items) >= self._capacity:
                self._items.pop(next(iter(self._items)))
            self._items[key] = value
            return value

    def __contains__(self, key: Any) -> bool:
        with self._lock:
            return key in self._items

    def drop(self, key: Any) -> None:
        """Forget one entry (its weights were erased)."""
        with self._lock:
            self._items.pop(key, None)


GENERATORS = LoadedCache(capacity=2)
VERIFIERS = LoadedCache(capacity=16)


@lru_cache(maxsize=2)
def embedder(kind: str) -> Embedder:
    if kind == "hashing":
        return HashingEmbedder()
    from models.generative.embedder import MiniLMEmbedder

    return MiniLMEmbedder()


@lru_cache(maxsize=2)
def caching_embedder(kind: str) -> CachingEmbedder:
    """For texts that come back (facts, retained answers), never for users' responses."""
    return CachingEmbedder(embedder(kind))


@contextmanager
def one_embedding_thread(kind: str) -> Iterator[None]:
    """MiniLM on one torch thread for the duration (then as before), for the activation's
    few dozen short texts: a second intra-op thread adds little to a batch that small, and on
    a busy machine the two wait for each other's core. Measured on a loaded 2-core machine,
    one to fifteen short texts cost 0.16-0.5 s of CPU on two threads, 15-75 ms on one.
    Process-wide, so only for a worker's task (one at a time per pool process)."""
    if kind == "hashing":
        yield
        return
    import torch  # loaded by the MiniLM embedder anyway

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generator(model_dir: str) -> Any:
    from models.generative.generator import Generator  # torch + transformers: load lazily

    return GENERATORS.get(model_dir, lambda: Generator.from_dir(model_dir))


def verifier_for(key: Any, rules: RuleSet, embedder_kind: str) -> Verifier:
    # Keyed by (model id, version): versions are immutable, so a cached verifier never goes stale.
    # Fact vectors come from the caching embedder: a new version shares most facts with the
    # one before, so building its verifier embeds only the new request's facts.
    return VERIFIERS.get(
        key,
        lambda: Verifier(
            rules, embedder(embedder_kind), fact_embedder=caching_embedder(embedder_kind)
        ),
    )
