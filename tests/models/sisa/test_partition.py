"""Where a record lives: every record of a subject in one shard, shards spread by a salt, slices
that never move."""

from __future__ import annotations

from collections import Counter

import numpy as np

from models.sisa import SisaConfig, TrainingRecord, assign_shard, assign_slice
from models.sisa.records import keys_by_slice

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
