"""S3T's slice orders: the same layered fine-tune trained in several orders; an erasure serves
the order where its subject sits deepest, and that switch-off is exact (``torch.equal`` with a
fine-tune from scratch on the retained records of the positions kept)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.artifacts import LocalArtifactStore
from models.finetune import (
    FinetuneConfig,
    base_model_id,
    best_order,
    first_affected,
    load_checkpoint,
    order_plan,
    slice_of_subjects,
    slice_orders,
    switch_off,
    switch_off_orders,
    train_sliced,
    train_sliced_in_memory,
    with_orders,
)
from tests.support.finetune_data import LAYERED, RECORDS, subject_in


def test_orders_are_rotations_and_every_bucket_is_last_in_one() -> None:
    orders = slice_orders(4, 4)
    assert orders[0] == (0, 1, 2, 3)
    assert sorted(order[-1] for order in orders) == [0, 1, 2, 3]
    assert slice_orders(4, 2) == [(0, 1, 2, 3), (2, 3, 0, 1)]
    with pytest.raises(ValueError):
        slice_orders(4, 5)


def test_an_order_relabels_positions_and_has_its_own_addresses() -> None:
    identity, rotated = with_orders(LAYERED, 2)
    assert identity == LAYERED and identity.fingerprint() == LAYERED.fingerprint()
    assert rotated.fingerprint() != LAYERED.fingerprint()
    plain, turned = slice_of_subjects(identity, RECORDS), slice_of_subjects(rotated, RECORDS)
    for subject, position in plain.items():
        assert turned[subject] == rotated.slice_order.index(position)
    assert FinetuneConfig.from_dict(rotated.to_dict()) == rotated
    with pytest.raises(ValueError, match="slice_order"):
        replace(LAYERED, slice_order=(0, 0, 1, 2))


def test_the_order_chosen_keeps_the_most_adapters() -> None:
    configs = with_orders(LAYERED, 4)
    subject = subject_in(0)  # first in the identity order: every adapter would go
    assert first_affected(configs[0], RECORDS, [subject]) == 0
    chosen = best_order(configs, RECORDS, [subject])
    assert first_affected(configs[chosen], RECORDS, [subject]) == LAYERED.slices - 1
    assert best_order(configs, RECORDS, []) == 0  # nothing erased: the identity order stays


def test_switch_off_in_the_chosen_order_is_exact(four_layer_base: Path, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    base = base_model_id(four_layer_base)
    configs = with_orders(LAYERED, 2)
    served = [train_sliced(four_layer_base, c, RECORDS, store, base_id=base) for c in configs]
    subject = subject_in(0)
    chosen = best_order(configs, RECORDS, [subject])
    config = configs[chosen]
    off = switch_off(config, RECORDS, [subject], served[chosen].final_checkpoint, base)
    assert chosen == 1 and off.first_affected_slice == 2
    finals = [s.final_checkpoint for s in served]
    index, offs = switch_off_orders(configs, RECORDS, [subject], finals, base)
    assert index == chosen and offs[index] == off and offs[0].first_affected_slice == 0
    retained = [r for r in RECORDS if r.subject != subject]
    scratch = train_sliced_in_memory(
        four_layer_base, config, retained, base_id=base, upto=off.first_affected_slice
    )
    assert scratch.result.final_checkpoint == off.checkpoint_served
    stored = load_checkpoint(store, off.checkpoint_served).model_state
    for name, tensor in scratch.model.adapter_state().items():
        assert torch.equal(tensor, stored[name]), name
    assert all(r.subject != subject for r in RECORDS if r.key in off.retained_prefix_keys)


def test_the_plan_weighs_orders_against_adapters_kept() -> None:
    plan = order_plan(
        LAYERED, RECORDS, max_orders=4, checkpoint_bytes=1000, finetune_seconds=2.0, ks=(1, 5)
    )
    assert [p["orders"] for p in plan] == [1, 2, 3, 4]
    assert [p["checkpoint_bytes"] for p in plan] == [4000, 8000, 12000, 16000]
    kept_one = [p["expected_slices_kept"]["1"] for p in plan]
    assert kept_one == sorted(kept_one) and kept_one[-1] == LAYERED.slices - 1
    assert kept_one[0] < kept_one[-1]
    assert all(p["expected_slices_kept"]["5"] <= p["expected_slices_kept"]["1"] for p in plan)
