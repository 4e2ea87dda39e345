"""Sliced fine-tuning: erasing subjects retrains from their slice and equals training from
scratch on the retained records, tensor for tensor (adapter and optimizer state)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.artifacts import LocalArtifactStore
from models.finetune import (
    FinetuneConfig,
    FinetuneRecord,
    PrefixCache,
    base_model_id,
    checkpoint_ids,
    checkpoint_key,
    destroy_checkpoints,
    keys_by_slice,
    load_checkpoint,
    slice_of_subjects,
    train_sliced,
    train_sliced_in_memory,
    unlearn_subjects,
    verify_bit_exact,
)
from models.finetune.records import tokenize_record
from models.sisa.exactness import compare_states
from tests.models.conftest import RECORDS

# Salt "t1" puts the 12 subjects in all four slices (3, 4, 3, 2), so there is a first, a
# middle and a last slice to erase from.
CONFIG = FinetuneConfig(
    slices=4,
    epochs=4,
    learning_rate=1e-2,
    batch_size=4,
    lora_rank=4,
    adapter_layers=1,
    seed=3,
    partition_salt="t1",
)
SLICES = slice_of_subjects(CONFIG, RECORDS)


def subject_in(slice_index: int) -> str:
    return min(s for s, r in SLICES.items() if r == slice_index)


@pytest.fixture()
def trained(tiny_base: Path, tmp_path: Path) -> tuple[LocalArtifactStore, str]:
    store = LocalArtifactStore(tmp_path / "store")
    result = train_sliced(tiny_base, CONFIG, RECORDS, store)
    assert result.slices_trained == CONFIG.slices
    assert result.optimizer_steps > 0
    return store, result.final_checkpoint


def test_every_slice_is_populated() -> None:
    assert sorted(set(SLICES.values())) == [0, 1, 2, 3]


@pytest.mark.parametrize("slice_index", [0, 2, 3], ids=["first", "middle", "last"])
def test_erasing_one_subject_is_bit_exact(
    tiny_base: Path, trained: tuple[LocalArtifactStore, str], slice_index: int
) -> None:
    store, served = trained
    subject = subject_in(slice_index)
    outcome = unlearn_subjects(tiny_base, CONFIG, RECORDS, [subject], store, served)
    assert outcome.first_affected_slice == slice_index
    assert outcome.training.resumed_from_slice == slice_index
    assert outcome.slices_retrained == CONFIG.slices - slice_index
    assert outcome.erased_records == 2
    assert all(r.subject != subject for r in outcome.retained_records)
    assert outcome.checkpoint_after != served

    check, scratch = verify_bit_exact(
        tiny_base, CONFIG, outcome.retained_records, outcome.checkpoint_after, store
    )
    assert check.bit_exact, check.mismatched
    # The adapter tensors, Adam's two moments per tensor, and its step counters.
    assert check.tensors_compared == 4 * len(scratch.model.trainable)
    stored = load_checkpoint(store, outcome.checkpoint_after)
    for name, tensor in scratch.model.adapter_state().items():
        assert torch.equal(tensor, stored.model_state[name]), name
    assert compare_states(scratch.optimizer.state_dict(), stored.optimizer_state)[1] == []


def test_erasing_several_subjects_at_once(
    tiny_base: Path, trained: tuple[LocalArtifactStore, str]
) -> None:
    store, served = trained
    subjects = [subject_in(1), subject_in(3), "never-trained"]
    outcome = unlearn_subjects(tiny_base, CONFIG, RECORDS, subjects, store, served)
    assert outcome.first_affected_slice == 1
    assert outcome.slices_retrained == 3
    assert outcome.erased_subjects == sorted(subjects[:2])
    assert outcome.subjects_not_found == ["never-trained"]
    check, _ = verify_bit_exact(
        tiny_base, CONFIG, outcome.retained_records, outcome.checkpoint_after, store
    )
    assert check.bit_exact, check.mismatched


def test_a_retrain_reusing_the_first_trainings_activations_is_bit_exact(
    tiny_base: Path, tmp_path: Path
) -> None:
    """The frozen layers' activations computed by the first fine-tune, handed to the retrain
    (bench/finetune_exact.py measures what that saves): nothing is recomputed, and the result
    equals fine-tuning from scratch with fresh activations, tensor for tensor."""
    store = LocalArtifactStore(tmp_path / "store")
    cache = PrefixCache()
    served = train_sliced(tiny_base, CONFIG, RECORDS, store, prefix_cache=cache).final_checkpoint
    filled = len(cache)
    assert filled > 0
    subject = subject_in(1)
    outcome = unlearn_subjects(
        tiny_base, CONFIG, RECORDS, [subject], store, served, prefix_cache=cache
    )
    assert outcome.slices_retrained == 3 and len(cache) == filled
    check, _ = verify_bit_exact(
        tiny_base, CONFIG, outcome.retained_records, outcome.checkpoint_after, store
    )
    assert check.bit_exact, check.mismatched


def test_the_check_fails_for_other_records(
    tiny_base: Path, trained: tuple[LocalArtifactStore, str]
) -> None:
    store, served = trained
    outcome = unlearn_subjects(tiny_base, CONFIG, RECORDS, [subject_in(2)], store, served)
    # From scratch on all records (the erased subject included) is a different model.
    check, _ = verify_bit_exact(tiny_base, CONFIG, RECORDS, outcome.checkpoint_after, store)
    assert not check.bit_exact
    assert "checkpoint_id" in check.mismatched
    assert any(name.startswith("adapter.") for name in check.mismatched)


def test_training_changes_the_adapter_and_resumes_nothing_twice(
    tiny_base: Path, trained: tuple[LocalArtifactStore, str]
) -> None:
    store, served = trained
    again = train_sliced(tiny_base, CONFIG, list(reversed(RECORDS)), store)
    assert again.final_checkpoint == served  # input order does not matter
    assert again.slices_trained == 0 and again.checkpoint_bytes == {}
    first = load_checkpoint(store, again.checkpoint_ids[0]).model_state
    last = load_checkpoint(store, served).model_state
    assert any(not torch.equal(first[name], last[name]) for name in first)


def test_changed_text_under_the_same_key_is_retrained(
    tiny_base: Path, trained: tuple[LocalArtifactStore, str]
) -> None:
    store, _ = trained
    subject = subject_in(1)
    edited = [
        replace(r, completion=r.completion + " Again.") if r.subject == subject else r
        for r in RECORDS
    ]
    result = train_sliced(tiny_base, CONFIG, edited, store)
    assert result.resumed_from_slice == 1


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


def test_superseded_checkpoints_are_those_that_saw_the_subject(
    tiny_base: Path, trained: tuple[LocalArtifactStore, str]
) -> None:
    store, served = trained
    base = base_model_id(tiny_base)
    old = checkpoint_ids(base, CONFIG, keys_by_slice(CONFIG, RECORDS))
    subject = subject_in(2)
    outcome = unlearn_subjects(tiny_base, CONFIG, RECORDS, [subject], store, served)
    assert outcome.superseded_checkpoints == old[2:]
    assert outcome.checkpoints_after[:2] == old[:2]
    assert not set(outcome.superseded_checkpoints) & set(outcome.checkpoints_after)

    destroyed = destroy_checkpoints(store, outcome.superseded_checkpoints)
    assert [d["checkpoint"] for d in destroyed] == old[2:]
    assert all(d["deleted"] and d["bytes"] > 0 and len(d["sha256"]) == 64 for d in destroyed)
    for checkpoint in old[2:]:
        assert not store.exists(checkpoint_key(checkpoint))
    for checkpoint in outcome.checkpoints_after:
        assert store.exists(checkpoint_key(checkpoint))
    assert destroy_checkpoints(store, old[2:3])[0]["deleted"] is False


def test_unlearning_refuses_records_the_served_checkpoint_was_not_trained_on(
    tiny_base: Path, trained: tuple[LocalArtifactStore, str]
) -> None:
    store, served = trained
    with pytest.raises(ValueError, match="not trained on the given records"):
        unlearn_subjects(tiny_base, CONFIG, RECORDS[:-2], [subject_in(0)], store, served)


def test_a_second_run_from_scratch_gives_the_same_bits(tiny_base: Path) -> None:
    few: list[FinetuneRecord] = RECORDS[:8]
    one = train_sliced_in_memory(tiny_base, CONFIG, few)
    two = train_sliced_in_memory(tiny_base, CONFIG, few)
    assert compare_states(one.model.adapter_state(), two.model.adapter_state())[1] == []
    changed = train_sliced_in_memory(tiny_base, replace(CONFIG, seed=4), few)
    assert compare_states(one.model.adapter_state(), changed.model.adapter_state())[1] != []


def test_plain_text_records_train_on_every_token(tiny_base: Path) -> None:
    texts = [
        FinetuneRecord(f"t{i}", f"writer-{i}", f"Note {i}: the harbor closes at {i + 5} pm.")
        for i in range(6)
    ]
    config = replace(CONFIG, slices=2)
    trained = train_sliced_in_memory(tiny_base, config, texts)
    assert trained.result.num_records == 6 and trained.result.optimizer_steps > 0
    ids, labels = tokenize_record(trained.model.tokenizer, texts[0], trained.model.eos_id)
    assert labels == ids and ids[-1] == trained.model.eos_id
    qa_ids, qa_labels = tokenize_record(trained.model.tokenizer, RECORDS[0], trained.model.eos_id)
    # Question/answer records take the loss on the answer only.
    assert qa_labels[0] == -100 and qa_labels[-1] == trained.model.eos_id
    assert len(qa_ids) == len(qa_labels)
