"""Placement at ingestion (ARCANE-style): which subjects are likely to be erased, and how much
of a shard one request is then expected to retrain, with and without placing them last."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models.sisa import SisaConfig, compare_placement
from service.core.errors import invalid
from service.registry.config import PlacementSettings

TRUTHY = frozenset({"1", "true", "yes", "y", "t"})
FALSY = frozenset({"", "0", "false", "no", "n", "f"})


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text in TRUTHY:
        return True
    if text in FALSY:
        return False
    # Never echo the value: it is a cell of personal data.
    raise invalid("invalid_placement_flag", "the placement flag column holds a non-boolean value")


def _recency_value(raw: str) -> tuple[int, float | str]:
    text = raw.strip()
    try:
        number = float(text)
    except ValueError:
        return (1, text)  # ISO dates compare as text; numbers sort before text
    return (0, number) if math.isfinite(number) else (-1, 0.0)


def flagged_subjects(
    settings: PlacementSettings, refs: Sequence[str], values: Sequence[str]
) -> set[str]:
    """The subjects (keyed-hash refs) to place in the tail slices; one value per row."""
    if settings.flag_column is not None:
        return {ref for ref, value in zip(refs, values, strict=True) if _flag(value)}
    latest: dict[str, tuple[int, float | str]] = {}
    for ref, raw in zip(refs, values, strict=True):
        if not raw.strip():
            continue
        value = _recency_value(raw)
        if ref not in latest or value > latest[ref]:
            latest[ref] = value
    kinds = {kind for kind, _ in latest.values() if kind >= 0}
    if len(kinds) > 1:
        raise invalid("invalid_recency_column", "the recency column mixes numbers and text")
    ranked = sorted(latest, key=lambda ref: (latest[ref], ref), reverse=True)
    return set(ranked[: round(settings.recent_fraction * len(ranked))])


def placement_report(
    config: SisaConfig, settings: PlacementSettings, records: Sequence[tuple[str, bool]]
) -> dict[str, Any]:
    """Expected share of a shard's training one request retrains, with and without placement
    (train records only: ``(record key, likely erased)``)."""
    report = compare_placement(
        config, records, flagged_erasure_odds=settings.flagged_erasure_odds
    ).to_dict()
    report["column"] = "flag" if settings.flag_column is not None else "recency"
    report["expected_retrain_fraction"] = {
        "with_placement": round(report.pop("with_placement"), 4),
        "without_placement": round(report.pop("without_placement"), 4),
    }
    return report
