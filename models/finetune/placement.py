"""What a placement costs: the expected share of training an erasure request retrains.

Slice r trains ``slice_epochs`` epochs over slices 0..r, so retraining from slice s repeats the
work of slices s..R-1. Putting the subjects most likely to be erased into the last slices
(ARCANE, Yan et al. 2022) makes that tail short for the requests that actually come.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from models.finetune.config import FinetuneConfig
from models.finetune.records import FinetuneRecord, slice_of_subjects

__all__ = ["expected_retrain_fraction", "placement_report", "retrain_fraction"]


def _slice_costs(config: FinetuneConfig, records: Sequence[FinetuneRecord]) -> list[int]:
    # Cost in record passes; every record costs the same (tokens would refine it, but the
    # ratio is what matters and TOFU-like records have similar lengths).
    slices = slice_of_subjects(config, records)
    sizes = [0] * config.slices
    for record in records:
        sizes[slices[record.subject]] += 1
    costs, prefix = [], 0
    for size in sizes:
        prefix += size
        costs.append(config.slice_epochs * prefix)
    return costs


def retrain_fraction(
    config: FinetuneConfig, records: Sequence[FinetuneRecord], first: int
) -> float:
    """Share of a full fine-tune's work that retraining from slice ``first`` repeats."""
    costs = _slice_costs(config, records)
    total = sum(costs)
    return sum(costs[first:]) / total if total else 0.0


def expected_retrain_fraction(
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    erase_weights: Mapping[str, float] | None = None,
) -> float:
    """Expected retrain fraction of one request erasing one subject.

    ``erase_weights`` gives each subject's relative chance of being the one erased (missing
    subjects weigh 0); by default every subject is equally likely.
    """
    slices = slice_of_subjects(config, records)
    weights = {s: 1.0 for s in slices} if erase_weights is None else dict(erase_weights)
    costs = _slice_costs(config, records)
    total_cost = sum(costs)
    total_weight = sum(weights.get(s, 0.0) for s in slices)
    if total_cost == 0 or total_weight <= 0:
        return 0.0
    tails = [sum(costs[r:]) / total_cost for r in range(config.slices)]
    return sum(weights.get(s, 0.0) * tails[r] for s, r in slices.items()) / total_weight


def placement_report(
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    erase_weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Expected retrain fraction under hash placement and under ``likely_last``.

    By default a flagged subject is taken to be as likely to be erased as the flag says: the
    weights are 1 for flagged subjects and 0 for the rest when any subject is flagged.
    """
    if erase_weights is None:
        flagged = {r.subject for r in records if r.likely_erased}
        if flagged:
            erase_weights = {r.subject: float(r.subject in flagged) for r in records}
    return {
        policy: expected_retrain_fraction(replace(config, placement=policy), records, erase_weights)
        for policy in ("hash", "likely_last")
    }
