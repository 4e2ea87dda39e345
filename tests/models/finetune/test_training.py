"""Sliced fine-tuning: it changes the adapter, never trains a stored slice twice, retrains changed
text, gives the same bits twice, and trains plain text on every token."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.artifacts import LocalArtifactStore
from models.finetune import (
    FinetuneConfig,
    FinetuneRecord,
    base_model_id,
    checkpoint_ids,
    initial_checkpoint_id,
    keys_by_slice,
    load_checkpoint,
    train_sliced,
    train_sliced_in_memory,
)
from models.finetune.records import tokenize_record
from models.slicing.exactness import compare_states
from tests.support.finetune_data import CONFIG, LAYERED, RECORDS, subject_in


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


def test_a_layered_config_needs_a_layer_group_per_slice() -> None:
    with pytest.raises(ValueError, match="layered"):
        FinetuneConfig(slices=4, adapter_layers=2, layered=True)
    assert LAYERED.layer_group(0) == (0, 1) and LAYERED.layer_group(3) == (3, 4)
    # Fine-tunes trained before layering existed keep their addresses.
    assert replace(CONFIG, layered=False).fingerprint() == CONFIG.fingerprint()
    assert LAYERED.fingerprint() != replace(LAYERED, layered=False).fingerprint()


def test_each_slice_trains_only_its_own_layer(
    four_layer_base: Path, layered: tuple[LocalArtifactStore, str]
) -> None:
    store, _ = layered
    base = base_model_id(four_layer_base)
    ids = checkpoint_ids(base, LAYERED, keys_by_slice(LAYERED, RECORDS))
    initial = load_checkpoint(store, initial_checkpoint_id(base, LAYERED)).model_state
    for slice_index, checkpoint in enumerate(ids):
        state = load_checkpoint(store, checkpoint).model_state
        for name, tensor in state.items():
            layer = int(name.split(".layers.")[1].split(".")[0])
            if layer > slice_index:  # a later slice's adapter: still at its start
                assert torch.equal(tensor, initial[name]), name
        changed = [n for n, t in state.items() if not torch.equal(t, initial[n])]
        assert any(f".layers.{slice_index}." in n for n in changed)
