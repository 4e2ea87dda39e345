"""Checkpoint content addresses: one per slice prefix."""

from __future__ import annotations

import pytest

from models.sisa import SisaConfig, checkpoint_id
from models.sisa.checkpoints import checkpoint_ids

CONFIG = SisaConfig(shards=8, slices=5, input_dim=2, num_classes=2)


def test_checkpoint_ids_address_slice_prefixes() -> None:
    slices = [["a", "b"], [], ["c"], ["d", "e"], ["f"]]
    ids = checkpoint_ids(CONFIG, 3, slices)
    assert ids == [checkpoint_id(CONFIG, 3, r, slices[: r + 1]) for r in range(len(slices))]
    assert len(set(ids)) == len(ids)
    # erasing "d" leaves the addresses of slices 0..2 as they were
    erased = checkpoint_ids(CONFIG, 3, [["a", "b"], [], ["c"], ["e"], ["f"]])
    assert erased[:3] == ids[:3]
    assert not set(erased[3:]) & set(ids)
    # same flat key order, different slice boundary: a different training, a different address
    assert checkpoint_id(CONFIG, 3, 1, [["a"], ["b"]]) != checkpoint_id(
        CONFIG, 3, 1, [["a", "b"], []]
    )
    assert checkpoint_id(CONFIG, 2, 0, [["a"]]) != checkpoint_id(CONFIG, 3, 0, [["a"]])
    other = SisaConfig.from_dict({**CONFIG.to_dict(), "epochs": 3})
    assert checkpoint_id(other, 3, 0, [["a"]]) != checkpoint_id(CONFIG, 3, 0, [["a"]])


def test_checkpoint_id_rejects_a_flat_key_list() -> None:
    with pytest.raises(TypeError):
        checkpoint_id(CONFIG, 0, 1, ["ab", "cd"])
    with pytest.raises(ValueError):
        checkpoint_id(CONFIG, 0, 2, [["a"], ["b"]])
