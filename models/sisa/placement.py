"""How much of a shard one erasure request retrains, with and without ARCANE-style placement.

Retraining from slice ``k`` redoes the work of slices ``k..R-1``; slice ``j`` trains on the
prefix ``0..j``, so its work grows with the prefix. Placing the records most likely to be erased
in the last slices (``SisaConfig.tail_slices``) makes the expected restart slice late.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import accumulate
from typing import Any

from models.sisa.config import SisaConfig
from models.sisa.partition import assign_slice

__all__ = ["PlacementReport", "compare_placement", "expected_retrain_fraction"]


def expected_retrain_fraction(
    slice_sizes: Sequence[float],
    erasure_mass: Sequence[float],
    work_by_slice: Sequence[float] | None = None,
) -> float:
    """Expected share of a shard's training work that one erasure request redoes.

    ``erasure_mass[k]``: how likely the erased record is in slice ``k`` (any scale).
    ``work_by_slice[k]``: what training slice ``k`` cost; by default the prefix size, i.e.
    the same number of epochs after every slice (measured ``ShardTrainingResult.work_by_slice``
    is better when early stopping ran).
    """
    if len(slice_sizes) != len(erasure_mass):
        raise ValueError("one erasure mass per slice")
    work = list(accumulate(slice_sizes)) if work_by_slice is None else list(work_by_slice)
    total_work, total_mass = sum(work), sum(erasure_mass)
    if total_work <= 0 or total_mass <= 0:
        return 0.0
    tail_work = list(accumulate(reversed(work)))[::-1]  # tail_work[k] = sum(work[k:])
    return sum(m * t for m, t in zip(erasure_mass, tail_work, strict=True)) / (
        total_mass * total_work
    )


@dataclass(frozen=True)
class PlacementReport:
    with_placement: float
    without_placement: float
    tail_slices: int
    flagged_records: int
    records: int
    flagged_erasure_odds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_placement(
    config: SisaConfig,
    records: Iterable[tuple[str, bool]],
    *,
    flagged_erasure_odds: float,
) -> PlacementReport:
    """Expected retrain fraction of one request with ``config``'s placement and without it.

    ``records`` are ``(record key, likely_erased flag)``; a flagged record is assumed
    ``flagged_erasure_odds`` times as likely to be erased as any other (the caller's estimate,
    e.g. from past requests). Slice sizes come from the records' actual slices, pooled over
    shards (every shard draws its slices the same way).
    """
    if config.tail_slices == 0:
        raise ValueError("placement needs tail_slices > 0 in the config")
    if flagged_erasure_odds <= 0:
        raise ValueError("flagged_erasure_odds must be positive")
    uniform = config.replace(tail_slices=0)
    sizes = {"with": [0.0] * config.slices, "without": [0.0] * config.slices}
    mass = {"with": [0.0] * config.slices, "without": [0.0] * config.slices}
    flagged = total = 0
    for key, likely in records:
        weight = flagged_erasure_odds if likely else 1.0
        flagged += int(likely)
        total += 1
        for name, cfg in (("with", config), ("without", uniform)):
            slice_index = assign_slice(key, cfg, likely_erased=likely)
            sizes[name][slice_index] += 1
            mass[name][slice_index] += weight
    return PlacementReport(
        with_placement=expected_retrain_fraction(sizes["with"], mass["with"]),
        without_placement=expected_retrain_fraction(sizes["without"], mass["without"]),
        tail_slices=config.tail_slices,
        flagged_records=flagged,
        records=total,
        flagged_erasure_odds=flagged_erasure_odds,
    )
