"""Erasing subjects from a sliced fine-tune retrains from their slice and equals training from
scratch on the retained records, tensor for tensor (adapter and optimizer state)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.artifacts import LocalArtifactStore
from models.finetune import (
    PrefixCache,
    base_model_id,
    checkpoint_ids,
    checkpoint_key,
    destroy_checkpoints,
    initial_checkpoint_id,
    keys_by_slice,
    load_checkpoint,
    merged_model,
    switch_off,
    train_sliced,
    train_sliced_in_memory,
    unlearn_subjects,
    verify_bit_exact,
)
from models.slicing.exactness import compare_states
from tests.support.finetune_data import CONFIG, LAYERED, RECORDS, subject_in


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


@pytest.mark.parametrize("slice_index", [0, 2, 3], ids=["first", "middle", "last"])
def test_switch_off_serves_the_model_trained_without_the_slices(
    four_layer_base: Path, layered: tuple[LocalArtifactStore, str], slice_index: int
) -> None:
    store, served = layered
    base = base_model_id(four_layer_base)
    subject = subject_in(slice_index)
    off = switch_off(LAYERED, RECORDS, [subject, "never-trained"], served, base)
    assert off.first_affected_slice == slice_index
    assert off.erased_subjects == [subject] and off.subjects_not_found == ["never-trained"]
    assert off.erased_records == 2 and off.slices_switched_off == LAYERED.slices - slice_index
    retained = [r for r in RECORDS if r.subject != subject]

    # From scratch on the retained records, stopping before the erased subject's slice.
    scratch = train_sliced_in_memory(four_layer_base, LAYERED, retained, upto=slice_index)
    assert scratch.result.final_checkpoint == off.checkpoint_served
    stored = load_checkpoint(store, off.checkpoint_served).model_state
    fresh = scratch.model.adapter_state()
    assert set(fresh) == set(stored)
    for name, tensor in fresh.items():
        assert torch.equal(tensor, stored[name]), name
    # The served weights themselves (adapters merged into the base) are equal too.
    served_model, _ = merged_model(four_layer_base, LAYERED, off.checkpoint_served, store)
    with torch.no_grad():
        scratch_model = scratch.model.peft.merge_and_unload()
    scratch_weights = scratch_model.state_dict()
    for name, tensor in served_model.state_dict().items():
        assert torch.equal(tensor, scratch_weights[name]), name
    assert all(r.subject != subject for r in RECORDS if r.key in off.retained_prefix_keys)


def test_the_background_retrain_equals_training_without_the_person(
    four_layer_base: Path, layered: tuple[LocalArtifactStore, str], tmp_path: Path
) -> None:
    store, served = layered
    subject = subject_in(1)
    outcome = unlearn_subjects(four_layer_base, LAYERED, RECORDS, [subject], store, served)
    assert outcome.training.resumed_from_slice == 1 and outcome.slices_retrained == 3
    check, scratch = verify_bit_exact(
        four_layer_base, LAYERED, outcome.retained_records, outcome.checkpoint_after, store
    )
    assert check.bit_exact, check.mismatched
    stored = load_checkpoint(store, outcome.checkpoint_after)
    for name, tensor in scratch.model.adapter_state().items():
        assert torch.equal(tensor, stored.model_state[name]), name
    # A model trained with the person is told apart.
    wrong, _ = verify_bit_exact(four_layer_base, LAYERED, RECORDS, outcome.checkpoint_after, store)
    assert not wrong.bit_exact


def test_a_second_switch_off_before_the_restore_keeps_the_shorter_prefix(
    four_layer_base: Path, layered: tuple[LocalArtifactStore, str]
) -> None:
    _, served = layered
    base = base_model_id(four_layer_base)
    first = switch_off(LAYERED, RECORDS, [subject_in(1)], served, base)
    retained = [r for r in RECORDS if r.subject != subject_in(1)]
    later = switch_off(LAYERED, retained, [subject_in(3)], first.checkpoint_served, base)
    assert later.checkpoint_served == first.checkpoint_served
    earlier = switch_off(LAYERED, retained, [subject_in(0)], first.checkpoint_served, base)
    assert earlier.checkpoint_served == initial_checkpoint_id(base, LAYERED)
    assert earlier.retained_prefix_keys == []
    nothing = switch_off(LAYERED, retained, [], first.checkpoint_served, base)
    assert nothing.checkpoint_served == first.checkpoint_served
    with pytest.raises(ValueError, match="not trained on the given records"):
        switch_off(LAYERED, retained, [subject_in(0)], "0" * 64, base)
