"""The (S, R) planner: deterministic, and blind to erased records."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from models.sisa import SisaConfig, SubjectRecord, plan_sisa

BASE = SisaConfig(
    shards=1,
    slices=1,
    input_dim=4,
    num_classes=2,
    hidden=(8,),
    batch_size=16,
    validation_fraction=0.2,
    patience=2,
    max_rounds=8,
)
CANDIDATES = [(2, 2), (3, 2)]


def make_records(count: int = 240, seed: int = 0) -> list[SubjectRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        x = rng.normal(size=4).astype(np.float32)
        records.append(SubjectRecord(f"subject-{i // 2}", f"key-{i}", x, int(x[0] + x[1] > 0)))
    return records


class ErasedRecord:
    """Stands for an erased row: reading its contents fails the test."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.subject_ref = f"erased-{key}"
        self.likely_erased = False

    @property
    def x(self) -> np.ndarray:
        raise AssertionError("the planner read an erased record's features")

    @property
    def y(self) -> int:
        raise AssertionError("the planner read an erased record's label")


def plan(records: list[Any], **kwargs: Any) -> dict[str, Any]:
    return plan_sisa(BASE, records, candidates=CANDIDATES, **kwargs).to_dict()


def test_the_same_records_in_any_order_give_the_same_plan() -> None:
    records = make_records()
    first = plan(records)
    assert plan(list(reversed(records))) == first
    assert len(first["frontier"]) == len(CANDIDATES)
    assert {(p["shards"], p["slices"]) for p in first["frontier"]} == set(CANDIDATES)
    chosen = first["chosen"]
    if first["within_budget"]:
        inside = [p for p in first["frontier"] if p["within_budget"]]
        assert chosen["per_request_speedup"] == max(p["per_request_speedup"] for p in inside)
    for point in first["frontier"]:
        assert point["per_request_speedup"] > 1
        assert 0 < point["accuracy_gap_se_points"] < 100
        one_model = first["one_model_accuracy"]
        assert point["accuracy_gap_points"] == pytest.approx(100 * (one_model - point["accuracy"]))
        assert point["within_budget"] == (point["accuracy_gap_points"] <= 1.0)


def test_erased_records_are_never_read() -> None:
    records = make_records()
    erased = [ErasedRecord(f"gone-{i}") for i in range(30)]
    mixed = cast(list[Any], records[:100] + erased + records[100:])
    calls: list[tuple[str, int, int]] = []
    with_erased = plan(
        mixed,
        erased_keys={r.key for r in erased},
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    assert with_erased == plan(records)
    assert calls[0] == ("one_model", 0, 3) and calls[-1] == ("done", 3, 3)
    with pytest.raises(AssertionError, match="erased record"):
        plan(mixed)


def test_an_unreachable_budget_falls_back_to_the_most_accurate() -> None:
    result = plan(make_records(), budget_points=-100.0)
    assert result["within_budget"] is False
    best = max(p["accuracy"] for p in result["frontier"])
    assert result["chosen"]["accuracy"] == best


def test_a_noise_margin_only_ever_narrows_the_budget() -> None:
    records = make_records()
    plain = plan(records)
    careful = plan(records, se_margin=2.0)
    for loose, strict in zip(plain["frontier"], careful["frontier"], strict=True):
        assert loose["accuracy"] == strict["accuracy"]
        assert strict["within_budget"] == (
            strict["accuracy_gap_points"] + 2.0 * strict["accuracy_gap_se_points"] <= 1.0
        )
        assert loose["within_budget"] or not strict["within_budget"]
