"""The fine-tuning tests' tiny base LM (its tokenizer knows the words of
tests/support/finetune_data.py), and a sliced fine-tune of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.artifacts import LocalArtifactStore
from models.assets.tiny import train_tiny_qa
from models.finetune import train_sliced
from tests.support.finetune_data import CONFIG, LAYERED, RECORDS

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer Llama whose tokenizer knows the records' words; barely trained, since the
    fine-tune is what must learn the facts."""
    pairs = [(r.prompt or "", r.completion) for r in RECORDS]
    return train_tiny_qa(pairs, tmp_path_factory.mktemp("finetune-base"), seed=0, steps=20)


@pytest.fixture()
def trained(tiny_base: Path, tmp_path: Path) -> tuple[LocalArtifactStore, str]:
    store = LocalArtifactStore(tmp_path / "store")
    result = train_sliced(tiny_base, CONFIG, RECORDS, store)
    assert result.slices_trained == CONFIG.slices
    assert result.optimizer_steps > 0
    return store, result.final_checkpoint


@pytest.fixture(scope="session")
def four_layer_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, with four layers: a layer group for each of the four slices."""
    pairs = [(r.prompt or "", r.completion) for r in RECORDS]
    out = tmp_path_factory.mktemp("finetune-base-4")
    return train_tiny_qa(pairs, out, seed=0, steps=20, layers=4)


@pytest.fixture(scope="session")
def layered(
    four_layer_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LocalArtifactStore, str]:
    """A layered fine-tune; tests may add checkpoints to its store but never delete any."""
    store = LocalArtifactStore(tmp_path_factory.mktemp("layered-store"))
    result = train_sliced(four_layer_base, LAYERED, RECORDS, store)
    assert result.slices_trained == LAYERED.slices and result.optimizer_steps > 0
    return store, result.final_checkpoint
