"""ARCANE-style placement: flagged subjects go to the tail slices, and the expected retrain
fraction that saves."""

from __future__ import annotations

import pytest

from models.sisa import (
    assign_slice,
    compare_placement,
    expected_retrain_fraction,
)
from tests.support.sisa import EARLY_STOPPING


def test_placement_puts_flagged_subjects_in_the_tail_slices() -> None:
    config = EARLY_STOPPING.replace(slices=8, tail_slices=2)
    keys = [f"record-{i}" for i in range(400)]
    flagged = {assign_slice(k, config, likely_erased=True) for k in keys}
    others = {assign_slice(k, config) for k in keys}
    assert flagged == {6, 7}
    assert others == set(range(6))
    # A function of the record alone: the same answer whatever else exists.
    assert [assign_slice(k, config, likely_erased=True) for k in keys[:5]] == [
        assign_slice(k, config, likely_erased=True) for k in reversed(keys[:5])
    ][::-1]
    records = [(k, i % 10 == 0) for i, k in enumerate(keys)]
    report = compare_placement(config, records, flagged_erasure_odds=20.0)
    assert report.flagged_records == 40
    assert report.with_placement < report.without_placement
    # Without placement the expected fraction is that of uniform slices.
    assert report.without_placement == pytest.approx(
        expected_retrain_fraction([1.0] * 8, [1.0] * 8), abs=0.05
    )


def test_expected_retrain_fraction_extremes() -> None:
    sizes = [10.0, 10.0, 10.0, 10.0]
    work = [10.0, 20.0, 30.0, 40.0]
    assert expected_retrain_fraction(sizes, [1, 0, 0, 0]) == pytest.approx(1.0)
    assert expected_retrain_fraction(sizes, [0, 0, 0, 1]) == pytest.approx(40 / 100)
    assert expected_retrain_fraction(sizes, [0, 0, 1, 0], work) == pytest.approx(70 / 100)
