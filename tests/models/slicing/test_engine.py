"""The slice-retrain contract, held by both engines through the interface alone: train, erase
one subject, and the retrain equals training from scratch without it, bit for bit; the
checkpoint trained with the subject does not."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from models.artifacts import LocalArtifactStore
from models.assets.tiny import train_tiny_qa
from models.finetune import FinetuneEngine
from models.sisa import ShardEngine, SisaConfig
from models.slicing import SliceRetrain, SliceRetrainEngine
from tests.support.finetune_data import CONFIG as FINETUNE
from tests.support.finetune_data import RECORDS as TEXTS
from tests.support.finetune_data import SLICES, subject_in
from tests.support.sisa import make_records

os.environ["HF_HUB_OFFLINE"] = "1"

SISA = SisaConfig(
    shards=2,
    slices=4,
    input_dim=6,
    num_classes=3,
    hidden=(8,),
    epochs=3,
    learning_rate=1e-2,
    batch_size=8,
    seed=11,
)


@dataclass(frozen=True)
class Case:
    engine: SliceRetrainEngine[Any, Any]
    records: list[Any]
    erase: list[str]
    """The keys of one subject's records."""
    erased_slice: int
    """The slice those records were trained in."""


def _shard_case() -> Case:
    records = make_records(SISA, 120)[0]
    # A subject of a SISA shard is a record here; one in slice 2 leaves slices 0..1 to reuse.
    erased = next(r for r in records if r.slice == 2)
    return Case(ShardEngine(SISA, 0), records, [erased.key], 2)


def _finetune_case(base: Path) -> Case:
    subject = subject_in(1)
    keys = [r.key for r in TEXTS if r.subject == subject]
    return Case(FinetuneEngine.of(base, FINETUNE), list(TEXTS), keys, SLICES[subject])


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pairs = [(r.prompt or "", r.completion) for r in TEXTS]
    return train_tiny_qa(pairs, tmp_path_factory.mktemp("engine-base"), seed=0, steps=20)


@pytest.fixture(params=["sisa_shard", "finetune"])
def case(request: pytest.FixtureRequest, tiny_base: Path) -> Case:
    return _shard_case() if request.param == "sisa_shard" else _finetune_case(tiny_base)


def test_unlearning_one_subject_equals_training_without_it(case: Case, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    engine = case.engine
    run = engine.train(case.records, store)
    assert run.slices_trained == engine.slices and run.resumed_from_slice == 0
    assert run.checkpoint_ids == engine.checkpoint_ids(case.records)

    retrain = engine.unlearn(case.records, case.erase, run.checkpoint_ids, store)

    assert isinstance(retrain, SliceRetrain)
    assert retrain.first_affected_slice == case.erased_slice
    # Resumed from the stored checkpoint before the subject's slice: only the rest retrained.
    assert retrain.resumed_from == run.checkpoint_ids[case.erased_slice - 1]
    assert retrain.slices_retrained == engine.slices - case.erased_slice
    assert retrain.checkpoint_before == run.final_checkpoint
    assert retrain.checkpoint_ids[: case.erased_slice] == run.checkpoint_ids[: case.erased_slice]
    assert retrain.superseded_checkpoints == run.checkpoint_ids[case.erased_slice :]
    retained = [r for r in case.records if r.key not in set(case.erase)]
    assert retrain.checkpoint_after == engine.checkpoint_ids(retained)[-1]

    check = engine.verify(retained, retrain.checkpoint_after, store)
    assert check.bit_exact and not check.mismatched and check.tensors_compared > 0
    # The checkpoint that saw the subject is not what training without it gives.
    stale = engine.verify(retained, run.final_checkpoint, store)
    assert not stale.bit_exact and "checkpoint_id" in stale.mismatched


def test_unlearning_what_no_record_holds_retrains_nothing(case: Case, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    run = case.engine.train(case.records, store)

    retrain = case.engine.unlearn(case.records, ["no-such-key"], run.checkpoint_ids, store)

    assert retrain.first_affected_slice == case.engine.slices
    assert retrain.slices_retrained == 0 and retrain.superseded_checkpoints == []
    assert retrain.checkpoint_after == run.final_checkpoint


def test_served_checkpoints_must_cover_every_slice(case: Case, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(ValueError, match="served checkpoints"):
        case.engine.unlearn(case.records, case.erase, ["one"], store)
