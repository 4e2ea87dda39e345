"""The pieces that make sliced training (SISA shards, fine-tunes) reproducible bit for bit on
CPU."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["derive_seed", "deterministic_torch", "seeded_generator"]


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on ``parts``.

    Every random draw gets its seed from its coordinates (seed, shard, slice, epoch) instead of
    from a generator that has been running since training began: a run resumed from a checkpoint
    has not seen the earlier draws, yet must make the same later ones.
    """
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seeded_generator(*parts: int | str) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(derive_seed(*parts))
    return generator


@contextmanager
def deterministic_torch(num_threads: int = 1) -> Iterator[None]:
    """Deterministic kernels and a fixed intra-op thread count, restored on exit.

    The thread count matters because a reduction split over a different number of threads sums
    in a different order, and float addition is not associative. These settings are
    process-wide, so concurrent training in threads of one process would interfere; lethe trains
    one shard per worker process.
    """
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        torch.set_num_threads(previous_threads)
