"""Placement hints at ingestion: which subjects go to the tail slices."""

from __future__ import annotations

import pytest

from service.core.errors import DomainError
from service.exact.placement import flagged_subjects
from service.registry.config import PlacementSettings


def test_flag_column_flags_a_subject_if_any_row_is_flagged() -> None:
    settings = PlacementSettings(flag_column="f")
    refs = ["a", "a", "b", "c"]
    assert flagged_subjects(settings, refs, ["no", "YES", "0", "true"]) == {"a", "c"}


def test_flag_column_rejects_other_values_without_echoing_them() -> None:
    with pytest.raises(DomainError) as info:
        flagged_subjects(PlacementSettings(flag_column="f"), ["a"], ["maybe-secret"])
    assert info.value.code == "invalid_placement_flag"
    assert "maybe-secret" not in info.value.message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "5", "3", "9", "2"], {"d", "b"}),
        (["2024-01-01", "2025-06-01", "2023-01-01", "2026-02-01", "2022-01-01"], {"d", "b"}),
    ],
)
def test_recency_flags_the_most_recent_subjects(values: list[str], expected: set[str]) -> None:
    settings = PlacementSettings(recency_column="t", recent_fraction=0.4)
    assert flagged_subjects(settings, ["a", "b", "c", "d", "e"], values) == expected


def test_placement_needs_exactly_one_source() -> None:
    with pytest.raises(ValueError):
        PlacementSettings()
    with pytest.raises(ValueError):
        PlacementSettings(flag_column="f", recency_column="t")
