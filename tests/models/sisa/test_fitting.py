"""Early stopping and the fixed schedule keep erasure exact: a retrain equals training from
scratch, its validation split and stopping epochs included."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from models.artifacts import LocalArtifactStore
from models.sisa import (
    Manifest,
    is_validation_record,
    load_checkpoint,
    train_shard,
    unlearn,
)
from models.sisa.fitting import MIN_STEPS_PER_ROUND
from models.sisa.records import ShardLayout
from models.sisa.training import train_shard_in_memory
from tests.support.sisa import EARLY_STOPPING, assert_states_equal, make_records


def test_early_stopped_retrain_equals_scratch_with_recomputed_split_and_epochs(
    tmp_path: Path,
) -> None:
    store = LocalArtifactStore(tmp_path)
    data = make_records(EARLY_STOPPING, 160)
    manifest = Manifest.from_results(train_shard(EARLY_STOPPING, s, data[s], store) for s in data)
    shard = max(data, key=lambda s: len(data[s]))
    target = next(r for r in sorted(data[shard], key=lambda r: r.key) if r.slice == 2)

    result = unlearn(EARLY_STOPPING, data, [target.key], store, manifest)
    outcome = result.shards[shard]
    assert outcome.training.resumed_from_slice == 2
    retained = result.retained_records[shard]
    scratch = train_shard_in_memory(EARLY_STOPPING, shard, retained)

    stored = load_checkpoint(store, outcome.checkpoint_after)
    assert_states_equal(scratch.model.state_dict(), stored.model_state)
    fresh_state = scratch.optimizer.state_dict()["state"]
    assert fresh_state
    for index, slots in fresh_state.items():
        for slot, tensor in slots.items():
            assert torch.equal(tensor, stored.optimizer_state["state"][index][slot]), slot
    # The validation split is a function of each retained key alone ...
    layout = ShardLayout.build(EARLY_STOPPING, retained)
    keys = [k for slice_keys in layout.keys_by_slice for k in slice_keys]
    assert layout.validation.tolist() == [is_validation_record(k, EARLY_STOPPING) for k in keys]
    assert 0 < layout.validation.sum() < len(keys)
    # ... and the stopping epochs of the resumed run are those training from scratch chose.
    assert outcome.training.epochs_by_slice == scratch.result.epochs_by_slice
    assert outcome.training.validation_accuracy == scratch.result.validation_accuracy
    # Early stopping really decided: some slice stopped before its cap of max_rounds rounds.
    caps = []
    for slice_index in range(EARLY_STOPPING.slices):
        end = layout.ends[slice_index]
        trained_on = int((~layout.validation[:end]).sum())
        steps = math.ceil(trained_on / EARLY_STOPPING.batch_size)
        caps.append(EARLY_STOPPING.max_rounds * max(1, math.ceil(MIN_STEPS_PER_ROUND / steps)))
    epochs = scratch.result.epochs_by_slice
    assert any(0 < e < cap for e, cap in zip(epochs, caps, strict=True)), (epochs, caps)


def test_the_fixed_schedule_still_trains_every_record_and_stays_exact(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    fixed = EARLY_STOPPING.replace(validation_fraction=0.0, epochs=4)
    data = make_records(fixed, 120)
    manifest = Manifest.from_results(train_shard(fixed, s, data[s], store) for s in data)
    target = next(r for r in sorted(data[0], key=lambda r: r.key) if r.slice == 1)
    result = unlearn(fixed, data, [target.key], store, manifest)
    outcome = result.shards[0]
    assert outcome.training.epochs_by_slice == [fixed.slice_epochs] * fixed.slices
    assert not ShardLayout.build(fixed, data[0]).validation.any()
    scratch = train_shard_in_memory(fixed, 0, result.retained_records[0])
    assert_states_equal(
        scratch.model.state_dict(), load_checkpoint(store, outcome.checkpoint_after).model_state
    )
