"""ARCANE-style placement: subjects likely to be erased go last, so erasing them is cheap."""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.finetune import (
    FinetuneConfig,
    FinetuneRecord,
    assign_slice,
    expected_retrain_fraction,
    placement_report,
    retrain_fraction,
    slice_of_subjects,
)

CONFIG = FinetuneConfig(slices=8, epochs=4, late_slices=2)


def records(subjects: int = 60, flagged_every: int = 5) -> list[FinetuneRecord]:
    return [
        FinetuneRecord(f"s{i}/{j}", f"s{i}", f"text {i} {j}", likely_erased=i % flagged_every == 0)
        for i in range(subjects)
        for j in range(3)
    ]


def test_likely_erased_subjects_go_to_the_last_slices() -> None:
    config = replace(CONFIG, placement="likely_last")
    items = records()
    slices = slice_of_subjects(config, items)
    flagged = {r.subject for r in items if r.likely_erased}
    assert flagged
    assert all(slices[s] >= config.slices - config.late_slices for s in flagged)
    assert all(slices[s] < config.slices - config.late_slices for s in slices if s not in flagged)
    # Under hash placement the flag is ignored and flagged subjects spread over early slices.
    hashed = slice_of_subjects(CONFIG, items)
    assert min(hashed[s] for s in flagged) < CONFIG.slices - CONFIG.late_slices


def test_a_subject_with_any_flagged_record_is_flagged_as_a_whole() -> None:
    config = replace(CONFIG, placement="likely_last")
    items = [
        FinetuneRecord("a/1", "a", "x"),
        FinetuneRecord("a/2", "a", "y", likely_erased=True),
    ]
    assert slice_of_subjects(config, items) == {"a": assign_slice("a", config, likely_erased=True)}


def test_placement_reduces_the_expected_retrain_fraction() -> None:
    items = records()
    report = placement_report(CONFIG, items)
    assert 0.0 < report["likely_last"] < report["hash"] <= 1.0
    # Flagged subjects in the last two of eight slices repeat at most the last two slices'
    # share of the work: (7 + 8) / (1 + ... + 8) = 15/36 with equal slice sizes.
    assert report["likely_last"] < 0.5
    # With every subject equally likely the placement can only help the flagged ones.
    uniform = {r.subject: 1.0 for r in items}
    assert placement_report(CONFIG, items, uniform)["hash"] == pytest.approx(
        expected_retrain_fraction(CONFIG, items)
    )


def test_retrain_fraction_counts_the_repeated_slices() -> None:
    items = records()
    assert retrain_fraction(CONFIG, items, 0) == pytest.approx(1.0)
    assert retrain_fraction(CONFIG, items, CONFIG.slices) == 0.0
    fractions = [retrain_fraction(CONFIG, items, s) for s in range(CONFIG.slices)]
    assert fractions == sorted(fractions, reverse=True)


def test_likely_last_needs_an_early_slice() -> None:
    with pytest.raises(ValueError, match="late_slices"):
        FinetuneConfig(slices=2, late_slices=2, placement="likely_last")
