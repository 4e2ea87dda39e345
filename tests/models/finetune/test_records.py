"""Fine-tuning records: every slice gets subjects."""

from __future__ import annotations

from tests.support.finetune_data import SLICES


def test_every_slice_is_populated() -> None:
    assert sorted(set(SLICES.values())) == [0, 1, 2, 3]
