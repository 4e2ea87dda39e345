"""Exactness of slice retraining: a retrained shard equals training from scratch, bit for bit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import FsspecArtifactStore, LocalArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    load_checkpoint,
    train_shard,
    unlearn,
    verify_bit_exact,
)
from models.sisa.records import keys_by_slice
from models.sisa.training import train_shard_in_memory
from tests.support.sisa import EARLY_STOPPING, make_records

CONFIG = SisaConfig(
    shards=3,
    slices=4,
    input_dim=6,
    num_classes=3,
    hidden=(8,),
    epochs=4,
    learning_rate=1e-2,
    batch_size=8,
    seed=7,
)


@dataclass(frozen=True)
class Dataset:
    by_shard: dict[int, list[TrainingRecord]]
    keys_of_subject: dict[int, list[str]]


def make_data(config: SisaConfig = CONFIG, subjects: int = 40, seed: int = 0) -> Dataset:
    """Subjects with 1-3 records each; labels depend on the features so training has signal."""
    rng = np.random.default_rng(seed)
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(config.shards)}
    keys_of_subject: dict[int, list[str]] = {}
    n = 0
    for subject in range(subjects):
        shard = assign_shard(f"subject-{subject}", config)
        for _ in range(int(rng.integers(1, 4))):
            x = rng.normal(size=config.input_dim).astype(np.float32)
            y = int(np.argmax(x[: config.num_classes]))
            key = f"r{n:04d}"
            n += 1
            by_shard[shard].append(TrainingRecord(key, assign_slice(key, config), x, y))
            keys_of_subject.setdefault(subject, []).append(key)
    return Dataset(by_shard, keys_of_subject)


def train_all(data: Mapping[int, Sequence[TrainingRecord]], store: LocalArtifactStore) -> Manifest:
    return Manifest.from_results(train_shard(CONFIG, s, data[s], store) for s in sorted(data))


def assert_equal_to_scratch(
    shard: int, retained: Sequence[TrainingRecord], checkpoint: str, store: LocalArtifactStore
) -> None:
    """Independent of verify_bit_exact: torch.equal on every model and optimizer tensor."""
    stored = load_checkpoint(store, checkpoint)
    fresh = train_shard_in_memory(CONFIG, shard, retained)
    model_state = fresh.model.state_dict()
    assert set(model_state) == set(stored.model_state)
    for name, tensor in model_state.items():
        assert torch.equal(tensor, stored.model_state[name]), name
    optimizer_state = fresh.optimizer.state_dict()["state"]
    stored_state = stored.optimizer_state["state"]
    assert set(optimizer_state) == set(stored_state)
    assert optimizer_state, "optimizer state must not be empty after training"
    for index, slots in optimizer_state.items():
        assert set(slots) == {"step", "exp_avg", "exp_avg_sq"}
        for slot, tensor in slots.items():
            assert torch.equal(tensor, stored_state[index][slot]), (index, slot)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path)


def record_in_slice(records: Sequence[TrainingRecord], slice_index: int) -> TrainingRecord:
    return next(r for r in sorted(records, key=lambda r: r.key) if r.slice == slice_index)


@pytest.mark.parametrize("slice_index", [0, 2, 3], ids=["first", "middle", "last"])
def test_erasing_one_record_equals_training_without_it(
    store: LocalArtifactStore, slice_index: int
) -> None:
    data = make_data().by_shard
    manifest = train_all(data, store)
    shard = max(data, key=lambda s: len(data[s]))
    target = record_in_slice(data[shard], slice_index)

    result = unlearn(CONFIG, data, [target.key], store, manifest)

    assert list(result.shards) == [shard]
    outcome = result.shards[shard]
    assert outcome.first_affected_slice == slice_index
    assert outcome.training.resumed_from_slice == slice_index
    assert outcome.slices_retrained == CONFIG.slices - slice_index
    retained = [r for r in data[shard] if r.key != target.key]
    assert_equal_to_scratch(shard, retained, outcome.checkpoint_after, store)
    check = verify_bit_exact(CONFIG, shard, retained, outcome.checkpoint_after, store)
    assert check.bit_exact, check.mismatched
    # two layers: 4 parameter tensors, plus (step, exp_avg, exp_avg_sq) for each in Adam
    assert check.tensors_compared == 4 + 4 * 3


def test_erasing_subjects_one_after_another_stays_exact(store: LocalArtifactStore) -> None:
    dataset = make_data()
    data = dataset.by_shard
    manifest = train_all(data, store)
    for subject in (3, 11, 25):
        keys = dataset.keys_of_subject[subject]
        shard = assign_shard(f"subject-{subject}", CONFIG)
        assert {r.key for r in data[shard]} >= set(keys)
        result = unlearn(CONFIG, data, keys, store, manifest)
        assert list(result.shards) == [shard]
        outcome = result.shards[shard]
        assert outcome.erased_keys == sorted(keys)
        assert_equal_to_scratch(
            shard, result.retained_records[shard], outcome.checkpoint_after, store
        )
        data = {**data, shard: result.retained_records[shard]}
        manifest = result.manifest
        assert manifest[shard] == outcome.checkpoint_after


def test_coalesced_erasure_retrains_each_affected_shard_once(store: LocalArtifactStore) -> None:
    dataset = make_data()
    data = dataset.by_shard
    manifest = train_all(data, store)
    subjects = [1, 2, 4, 8, 16, 32]
    keys = [k for s in subjects for k in dataset.keys_of_subject[s]]
    expected_shards = {assign_shard(f"subject-{s}", CONFIG) for s in subjects}
    assert len(expected_shards) >= 2

    result = unlearn(CONFIG, data, keys, store, manifest)

    assert set(result.shards) == expected_shards
    assert result.keys_not_found == []
    for shard, outcome in result.shards.items():
        erased = set(outcome.erased_keys)
        assert erased == {r.key for r in data[shard]} & set(keys)
        assert outcome.first_affected_slice == min(r.slice for r in data[shard] if r.key in erased)
        retained = [r for r in data[shard] if r.key not in erased]
        assert_equal_to_scratch(shard, retained, outcome.checkpoint_after, store)
    untouched = set(range(CONFIG.shards)) - expected_shards
    for shard in untouched:
        assert result.manifest[shard] == manifest[shard]


def test_resume_keeps_earlier_checkpoints_and_supersedes_later_ones(
    store: LocalArtifactStore,
) -> None:
    data = make_data().by_shard
    manifest = train_all(data, store)
    shard = max(data, key=lambda s: len(data[s]))
    old_ids = train_shard(CONFIG, shard, data[shard], store).checkpoint_ids
    old_bytes = {c: store.get(f"checkpoints/{c}") for c in old_ids}
    target = record_in_slice(data[shard], 2)

    result = unlearn(CONFIG, data, [target.key], store, manifest)
    outcome = result.shards[shard]
    new_ids = outcome.training.checkpoint_ids

    assert outcome.training.resumed_from_slice == 2
    assert new_ids[:2] == old_ids[:2]
    for c in old_ids[:2]:
        assert store.get(f"checkpoints/{c}") == old_bytes[c]
    assert not set(new_ids[2:]) & set(old_ids)
    assert outcome.superseded_checkpoints == old_ids[2:]
    assert outcome.checkpoint_before == manifest[shard] == old_ids[-1]


def test_training_again_on_the_same_records_trains_nothing(store: LocalArtifactStore) -> None:
    data = make_data().by_shard
    manifest = train_all(data, store)
    again = train_shard(CONFIG, 0, data[0], store)
    assert again.resumed_from_slice == CONFIG.slices
    assert again.slices_trained == 0
    assert again.final_checkpoint == manifest[0]
    nothing = unlearn(CONFIG, data, ["no-such-key"], store, manifest)
    assert nothing.shards == {}
    assert nothing.keys_not_found == ["no-such-key"]
    assert nothing.manifest == manifest


def test_without_cache_every_slice_is_trained(store: LocalArtifactStore) -> None:
    data = make_data().by_shard
    train_all(data, store)
    result = train_shard(CONFIG, 0, data[0], store, use_cache=False)
    assert result.resumed_from_slice == 0
    assert result.slices_trained == CONFIG.slices


def test_verify_detects_a_checkpoint_that_still_holds_the_erased_record(
    store: LocalArtifactStore,
) -> None:
    data = make_data().by_shard
    manifest = train_all(data, store)
    shard = max(data, key=lambda s: len(data[s]))
    target = record_in_slice(data[shard], 3)
    retained = [r for r in data[shard] if r.key != target.key]
    check = verify_bit_exact(CONFIG, shard, retained, manifest[shard], store)
    assert not check.bit_exact
    assert "checkpoint_id" in check.mismatched
    assert any(name.startswith("model.") for name in check.mismatched)
    assert any(name.startswith("optimizer.state") for name in check.mismatched)


def test_changed_contents_under_an_old_key_are_not_served_from_cache(
    store: LocalArtifactStore,
) -> None:
    data = make_data().by_shard
    train_all(data, store)
    records = sorted(data[0], key=lambda r: r.key)
    victim = record_in_slice(records, 1)
    changed = [
        TrainingRecord(r.key, r.slice, r.x + 1.0, r.y) if r.key == victim.key else r
        for r in records
    ]
    result = train_shard(CONFIG, 0, changed, store)
    assert result.resumed_from_slice == 1
    assert_equal_to_scratch(0, changed, result.final_checkpoint, store)


def test_empty_slices_and_an_empty_shard_keep_indices_aligned(store: LocalArtifactStore) -> None:
    data = make_data().by_shard
    only_last_slice = [r for r in data[0] if r.slice == CONFIG.slices - 1]
    assert only_last_slice
    sparse = train_shard(CONFIG, 0, only_last_slice, store)
    empty = train_shard(CONFIG, 1, [], store)
    for result in (sparse, empty):
        assert len(result.checkpoint_ids) == CONFIG.slices
        assert len(set(result.checkpoint_ids)) == CONFIG.slices
        assert all(store.exists(f"checkpoints/{c}") for c in result.checkpoint_ids)
    assert empty.num_records == 0
    assert verify_bit_exact(CONFIG, 0, only_last_slice, sparse.final_checkpoint, store).bit_exact
    assert verify_bit_exact(CONFIG, 1, [], empty.final_checkpoint, store).bit_exact
    full = train_shard(CONFIG, 2, data[2], store)
    ensemble = Ensemble.load(CONFIG, Manifest.from_results([sparse, empty, full]), store)
    assert ensemble.shards == [0, 2]


def test_record_order_does_not_matter(store: LocalArtifactStore) -> None:
    data = make_data().by_shard
    forward = train_shard(CONFIG, 0, data[0], store, use_cache=False)
    backward = train_shard_in_memory(CONFIG, 0, list(reversed(data[0])))
    assert backward.result.final_checkpoint == forward.final_checkpoint
    stored = load_checkpoint(store, forward.final_checkpoint)
    for name, tensor in backward.model.state_dict().items():
        assert torch.equal(tensor, stored.model_state[name])


def test_different_seed_gives_different_weights() -> None:
    data = make_data().by_shard
    a = train_shard_in_memory(CONFIG, 0, data[0])
    other = SisaConfig.from_dict({**CONFIG.to_dict(), "seed": CONFIG.seed + 1})
    b = train_shard_in_memory(other, 0, data[0])
    assert not torch.equal(a.model.state_dict()["0.weight"], b.model.state_dict()["0.weight"])


def test_training_restores_torch_settings_and_global_rng() -> None:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.random.get_rng_state()
    train_shard_in_memory(CONFIG, 0, make_data().by_shard[0])
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_manifest_mismatch_is_refused(store: LocalArtifactStore) -> None:
    data = make_data().by_shard
    manifest = train_all(data, store)
    shard = max(data, key=lambda s: len(data[s]))
    stale = manifest.replace({shard: "0" * 64})
    with pytest.raises(ValueError, match="not trained on the given records"):
        unlearn(CONFIG, data, [data[shard][0].key], store, stale)


def test_training_works_against_an_fsspec_store() -> None:
    store = FsspecArtifactStore(f"memory://sisa-{uuid.uuid4().hex}")
    data = make_data().by_shard
    first = train_shard(CONFIG, 0, data[0], store)
    second = train_shard(CONFIG, 0, data[0], store)
    assert second.slices_trained == 0
    assert len(store.keys("checkpoints/")) == CONFIG.slices
    assert first.lineage_hash == second.lineage_hash
    ids = keys_by_slice(CONFIG, data[0])
    assert sum(len(k) for k in ids) == first.num_records


def test_manifest_round_trip_and_version_hash(store: LocalArtifactStore) -> None:
    manifest = train_all(make_data().by_shard, store)
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert Manifest.from_dict(manifest.to_dict()).version_hash() == manifest.version_hash()
    assert list(manifest) == [0, 1, 2]
    changed = manifest.replace({1: "f" * 64})
    assert changed.version_hash() != manifest.version_hash()
    assert changed[0] == manifest[0] and changed[1] == "f" * 64


def test_a_changed_schedule_never_resumes_old_checkpoints(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    data = make_records(EARLY_STOPPING, 80)
    train_shard(EARLY_STOPPING, 0, data[0], store)
    again = train_shard(EARLY_STOPPING, 0, data[0], store)
    assert again.slices_trained == 0
    other = EARLY_STOPPING.replace(patience=3)
    changed = train_shard(other, 0, data[0], store)
    assert changed.resumed_from_slice == 0
    assert set(changed.checkpoint_ids).isdisjoint(again.checkpoint_ids)


def test_a_shard_too_small_to_learn_says_so() -> None:
    data = make_records(EARLY_STOPPING, 400, seed=1)
    learned = train_shard_in_memory(EARLY_STOPPING, 0, data[0]).result
    assert learned.too_small is None
    assert learned.validation_accuracy is not None and learned.majority_accuracy is not None
    assert learned.validation_accuracy > learned.majority_accuracy
    tiny = train_shard_in_memory(EARLY_STOPPING, 0, data[0][:12]).result
    assert tiny.too_small is not None and "validation records" in tiny.too_small
    empty = train_shard_in_memory(EARLY_STOPPING, 1, []).result
    assert empty.too_small == "no training records"
