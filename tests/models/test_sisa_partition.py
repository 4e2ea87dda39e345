"""Placement of records (shards by subject, slices by key) and checkpoint content addresses."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from models.sisa import SisaConfig, TrainingRecord, assign_shard, assign_slice, checkpoint_id
from models.sisa.checkpoints import checkpoint_ids
from models.sisa.records import ShardLayout, keys_by_slice

CONFIG = SisaConfig(shards=8, slices=5, input_dim=2, num_classes=2)


def test_all_records_of_a_subject_share_a_shard() -> None:
    subjects = [f"subject-{i}" for i in range(200)]
    records = [(s, f"{s}/record-{j}") for s in subjects for j in range(3)]
    shard_of_subject: dict[str, set[int]] = {}
    for subject, _key in records:
        shard_of_subject.setdefault(subject, set()).add(assign_shard(subject, CONFIG))
    assert all(len(shards) == 1 for shards in shard_of_subject.values())


def test_shards_are_spread_and_depend_on_the_salt() -> None:
    subjects = [f"subject-{i}" for i in range(800)]
    counts = Counter(assign_shard(s, CONFIG) for s in subjects)
    assert set(counts) == set(range(CONFIG.shards))
    assert max(counts.values()) < 2 * min(counts.values())
    salted = SisaConfig.from_dict({**CONFIG.to_dict(), "partition_salt": "other"})
    moved = sum(assign_shard(s, CONFIG) != assign_shard(s, salted) for s in subjects)
    assert moved > len(subjects) // 2


def test_slices_never_move_when_other_records_are_erased() -> None:
    rng = np.random.default_rng(0)
    keys = [f"k{i}" for i in range(300)]
    records = [
        TrainingRecord(k, assign_slice(k, CONFIG), rng.normal(size=2), int(rng.integers(0, 2)))
        for k in keys
    ]
    before = keys_by_slice(CONFIG, records)
    erased = set(keys[::7])
    after = keys_by_slice(CONFIG, [r for r in records if r.key not in erased])
    for slice_before, slice_after in zip(before, after, strict=True):
        assert slice_after == [k for k in slice_before if k not in erased]
    assert all(before), "every slice should hold records at this size"


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


def test_layout_validates_records() -> None:
    good = TrainingRecord("k", 0, np.zeros(2), 1)
    with pytest.raises(ValueError, match="duplicate"):
        ShardLayout.build(CONFIG, [good, good])
    with pytest.raises(ValueError, match="slice"):
        ShardLayout.build(CONFIG, [TrainingRecord("k", 5, np.zeros(2), 1)])
    with pytest.raises(ValueError, match="label"):
        ShardLayout.build(CONFIG, [TrainingRecord("k", 0, np.zeros(2), 2)])
    with pytest.raises(ValueError, match="shape"):
        ShardLayout.build(CONFIG, [TrainingRecord("k", 0, np.zeros(3), 1)])


def test_config_round_trip_fingerprint_and_slice_epochs() -> None:
    config = SisaConfig(shards=4, slices=8, input_dim=3, num_classes=2, hidden=(5, 4), epochs=20)
    assert SisaConfig.from_dict(config.to_dict()) == config
    assert SisaConfig.from_dict(config.to_dict()).fingerprint() == config.fingerprint()
    assert len(config.fingerprint()) == 64
    changed = SisaConfig.from_dict({**config.to_dict(), "learning_rate": 0.02})
    assert changed.fingerprint() != config.fingerprint()
    assert config.slice_epochs == 5  # ceil(2 * 20 / 9)
    assert SisaConfig(shards=1, slices=1, input_dim=1, num_classes=2, epochs=3).slice_epochs == 3
    with pytest.raises(ValueError, match="shards"):
        SisaConfig(shards=0, slices=1, input_dim=1, num_classes=2)
