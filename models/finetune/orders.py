"""S3T's slice orders: the same layered fine-tune trained in several slice orders, and the
order an erasure switches to.

An erasure that hits the slice trained at position p switches off the adapters from p on.
Trained in another order, the same subjects may sit deeper, so more adapters stay on: the
service keeps a few orders (each a whole fine-tune with its own checkpoints) and serves, after
an erasure, the order where the first affected position is largest. Which orders, and how many
are worth their training time and checkpoint bytes, is ``order_plan``'s trade-off.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from models.finetune.config import FinetuneConfig
from models.finetune.records import FinetuneRecord, slice_of_subjects
from models.finetune.unlearning import SwitchOff, switch_off

__all__ = [
    "best_order",
    "first_affected",
    "order_plan",
    "slice_orders",
    "switch_off_orders",
    "with_orders",
]


def slice_orders(slices: int, count: int) -> list[tuple[int, ...]]:
    """``count`` orders of ``slices`` buckets: rotations spread evenly, so every bucket is
    trained last (deepest) in some order when ``count`` = ``slices``; the first is the
    identity."""
    if not 1 <= count <= slices:
        raise ValueError(f"count must be between 1 and {slices}")
    shifts = [i * slices // count for i in range(count)]
    return [tuple((p + shift) % slices for p in range(slices)) for shift in shifts]


def with_orders(config: FinetuneConfig, count: int) -> list[FinetuneConfig]:
    """One config per order (``slice_orders``); the first is ``config`` in the identity order."""
    return [
        replace(config, slice_order=order if any(b != p for p, b in enumerate(order)) else ())
        for order in slice_orders(config.slices, count)
    ]


def first_affected(
    config: FinetuneConfig, records: Sequence[FinetuneRecord], erase_subjects: Collection[str]
) -> int:
    """The first training position holding an erased subject (the slice count: none)."""
    positions = slice_of_subjects(config, records)
    return min((positions[s] for s in erase_subjects if s in positions), default=config.slices)


def best_order(
    configs: Sequence[FinetuneConfig],
    records: Sequence[FinetuneRecord],
    erase_subjects: Collection[str],
) -> int:
    """The index of the order to serve without ``erase_subjects``: the one whose first affected
    position is deepest (most adapters kept); the earliest listed on a tie."""
    depths = [first_affected(c, records, erase_subjects) for c in configs]
    return depths.index(max(depths))


def switch_off_orders(
    configs: Sequence[FinetuneConfig],
    records: Sequence[FinetuneRecord],
    erase_subjects: Collection[str],
    served_checkpoints: Sequence[str],
    base_id: str,
) -> tuple[int, list[SwitchOff]]:
    """Every order switched off without ``erase_subjects``, and the index of the one to serve.

    ``served_checkpoints[i]`` is what order i serves now: its last checkpoint, or an earlier one
    a previous erasure switched it to (its restore not published yet). Each order keeps the
    slices before its own first affected position, so the one to serve keeps the most; on a
    fully trained fine-tune that is ``best_order``'s choice (the earliest listed on a tie).
    """
    if len(configs) != len(served_checkpoints) or not configs:
        raise ValueError("one served checkpoint per order is needed")
    offs = [
        switch_off(config, records, erase_subjects, served, base_id)
        for config, served in zip(configs, served_checkpoints, strict=True)
    ]
    kept = [len(off.checkpoints_served) for off in offs]
    return kept.index(max(kept)), offs


def _expected_kept(
    configs: Sequence[FinetuneConfig],
    records: Sequence[FinetuneRecord],
    k: int,
    draws: int,
    seed: int,
) -> float:
    subjects = sorted({r.subject for r in records})
    if not subjects:
        return float(configs[0].slices)
    positions = [slice_of_subjects(c, records) for c in configs]
    rng = random.Random(seed)
    kept = []
    for _ in range(draws):
        chosen = rng.sample(subjects, min(k, len(subjects)))
        kept.append(max(min(p[s] for s in chosen) for p in positions))
    return statistics.fmean(kept)


def order_plan(
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    *,
    max_orders: int,
    checkpoint_bytes: int,
    finetune_seconds: float,
    ks: Sequence[int] = (1, 5, 20),
    draws: int = 500,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """For 1..``max_orders`` orders: what they cost (checkpoints stored, training time, from
    one measured fine-tune) against the adapters an erasure of k random subjects keeps on,
    on average (a seeded draw of ``draws`` erasures per k)."""
    plan = []
    for count in range(1, max_orders + 1):
        configs = with_orders(config, count)
        plan.append(
            {
                "orders": count,
                "checkpoint_bytes": count * config.slices * checkpoint_bytes,
                "training_seconds": round(count * finetune_seconds, 1),
                "expected_slices_kept": {
                    str(k): round(_expected_kept(configs, records, k, draws, seed), 3) for k in ks
                },
                "slices": config.slices,
            }
        )
    return plan
