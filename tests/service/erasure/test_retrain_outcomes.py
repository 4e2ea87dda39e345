"""The typed results of exact retrains: what is stored (job results, certificates) round-trips
through ``to_json``/``from_json`` unchanged, and the stored shape is the one readers expect."""

from __future__ import annotations

import json

from service.erasure.retrain_outcomes import (
    Exactness,
    ExactnessResult,
    FinetuneExactness,
    FinetuneRetrainOutcome,
    MembershipEvidence,
    MembershipNotComputed,
    OrderOutcome,
    ShardRetrainOutcome,
)


def _shard(**changes: object) -> ShardRetrainOutcome:
    values: dict[str, object] = {
        "shard": 3,
        "version_before": 1,
        "checkpoint_before": "a" * 64,
        "checkpoint_after": "b" * 64,
        "first_affected_slice": 2,
        "slices_total": 4,
        "slices_retrained": 2,
        "retained_records": 120,
        "lineage_hash": "c" * 64,
        "retrain_seconds": 0.25,
        "exactness": Exactness(ExactnessResult.bit_exact, "always", 12, (), 0.5),
        "membership": MembershipEvidence(3, 40, 0.12, 0.5, "rank of each erased record"),
        "accuracy_before": 0.8,
        "accuracy_after": 0.79,
        "validation_accuracy": 0.81,
        "majority_accuracy": 0.6,
        "epochs_by_slice": (3, 3, 2, 4),
        "too_small": None,
        "public_base": None,
        "superseded_checkpoints": ("d" * 64, "e" * 64),
        "checkpoint_ids": ("1", "2", "3", "4"),
    }
    values.update(changes)
    return ShardRetrainOutcome(**values)  # type: ignore[arg-type]


def test_a_shard_outcome_round_trips_through_its_stored_json() -> None:
    outcome = _shard().published(2)
    stored = json.loads(json.dumps(outcome.to_json()))  # as JSONB gives it back
    again = ShardRetrainOutcome.from_json(stored)
    assert again.to_json() == outcome.to_json()
    # The manifest's checkpoint ids are stored with the version, not in the job's result.
    assert "checkpoint_ids" not in stored and again.checkpoint_ids == ()
    assert stored["version_after"] == 2 and stored["exactness"]["status"] == "bit_exact"


def test_an_unpublished_outcome_states_no_version_after() -> None:
    assert "version_after" not in _shard().to_json()


def test_membership_not_computed_round_trips() -> None:
    outcome = _shard(membership=MembershipNotComputed("no held-out records"))
    stored = outcome.to_json()
    assert stored["membership"] == {"status": "not_computed", "reason": "no held-out records"}
    assert ShardRetrainOutcome.from_json(stored).membership == outcome.membership


def _finetune(**changes: object) -> FinetuneRetrainOutcome:
    values: dict[str, object] = {
        "version_before": 1,
        "first_affected_slice": 3,
        "slices_retrained": 1,
        "slices_total": 4,
        "records_erased": 20,
        "checkpoint_before": "a" * 64,
        "checkpoint_after": "b" * 64,
        "superseded_checkpoints": ("c" * 64,),
        "lineage_hash": "d" * 64,
        "retrain_seconds": 12.5,
        "export_seconds": 1.5,
        "exactness": FinetuneExactness(ExactnessResult.bit_exact, 40, (), 10.0, 30.0),
    }
    values.update(changes)
    return FinetuneRetrainOutcome(**values)  # type: ignore[arg-type]


def test_a_finetune_outcome_has_no_shard_and_round_trips() -> None:
    outcome = _finetune().published(2)
    stored = json.loads(json.dumps(outcome.to_json()))
    assert "shard" not in stored and stored["slices_total"] == 4
    assert FinetuneRetrainOutcome.from_json(stored).to_json() == stored
    assert "version_after" not in outcome.certificate_json()


def test_a_finetune_kept_in_several_orders_names_the_one_served_and_round_trips() -> None:
    orders = (
        OrderOutcome(0, 0, 0, 0, "e" * 64, ()),
        OrderOutcome(1, 3, 3, 0, "b" * 64, ("f" * 64, "g" * 64, "b" * 64)),
    )
    checked = FinetuneExactness(ExactnessResult.bit_exact, 80, (), 10.0, 60.0, orders_checked=2)
    outcome = _finetune(orders=orders, served_order=1, exactness=checked, stage="switched_off")
    stored = json.loads(json.dumps(outcome.to_json()))
    assert (stored["served_order"], stored["slices_kept"]) == (1, 3)
    assert [o["slices_kept"] for o in stored["orders"]] == [0, 3]
    assert "checkpoint_ids" not in stored["orders"][1]  # the manifest's, not the certificate's
    assert stored["exactness"]["orders_checked"] == 2
    assert FinetuneRetrainOutcome.from_json(stored).to_json() == stored
    # One order: the shape stored before orders existed, unchanged.
    assert not {"orders", "served_order", "slices_kept"} & set(_finetune().to_json())
    assert "orders_checked" not in _finetune().exactness.to_json()


def test_a_finetune_result_stored_in_the_old_shape_is_still_read() -> None:
    old = {**_finetune().to_json(), "shard": 0, "slices": 4}
    del old["slices_total"]
    assert FinetuneRetrainOutcome.from_json(old).slices_total == 4


def test_a_check_that_did_not_run_stores_only_its_status() -> None:
    assert FinetuneExactness(ExactnessResult.not_run).to_json() == {"status": "not_run"}
    assert ExactnessResult.of(False) is ExactnessResult.mismatch
