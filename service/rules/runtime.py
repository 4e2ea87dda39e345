"""Loaded generators, embedders and verifiers, shared by the API and workers of one process."""

from __future__ import annotations

import threading
from collections.abc import Callable
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
