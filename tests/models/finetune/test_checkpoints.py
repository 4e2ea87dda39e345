"""Content addresses of fine-tune checkpoints change from the changed slice on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from models.finetune import (
    base_model_id,
    checkpoint_ids,
    keys_by_slice,
)
from tests.support.finetune_data import CONFIG, RECORDS, subject_in


def test_content_addresses_change_from_the_changed_slice_on(tiny_base: Path) -> None:
    base = base_model_id(tiny_base)
    before = checkpoint_ids(base, CONFIG, keys_by_slice(CONFIG, RECORDS))
    without = [r for r in RECORDS if r.subject != subject_in(2)]
    after = checkpoint_ids(base, CONFIG, keys_by_slice(CONFIG, without))
    assert after[:2] == before[:2]
    assert all(a != b for a, b in zip(after[2:], before[2:], strict=True))
    assert len(set(before)) == CONFIG.slices
    shuffled = checkpoint_ids(base, CONFIG, keys_by_slice(CONFIG, list(reversed(RECORDS))))
    assert shuffled == before
    other_config = checkpoint_ids(
        base, replace(CONFIG, learning_rate=2e-2), keys_by_slice(CONFIG, RECORDS)
    )
    assert not set(other_config) & set(before)
    other_base = checkpoint_ids("0" * 64, CONFIG, keys_by_slice(CONFIG, RECORDS))
    assert not set(other_base) & set(before)
    # A key moved across a slice boundary changes the address of every later slice.
    moved = [list(k) for k in keys_by_slice(CONFIG, RECORDS)]
    moved[1].append(moved[2].pop(0))
    assert checkpoint_ids(base, CONFIG, moved)[1] != before[1]
