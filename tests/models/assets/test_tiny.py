"""The tiny LM of the tests (models.assets.tiny): it learns its facts, the same weights for the
same seed."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from models.assets.tiny import train_tiny_qa
from models.generative.generator import Generator
from models.generative.qa_data import exact_recall
from tests.support.tiny_facts import PAIRS


def test_tiny_model_learns_its_facts(generator: Generator) -> None:
    assert exact_recall(generator, PAIRS, max_new_tokens=24) >= 0.9


def test_training_is_deterministic_per_seed(tmp_path: Path) -> None:
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        out = train_tiny_qa(PAIRS[:8], tmp_path / name, seed=seed, steps=3)
        return load_file(str(out / "model.safetensors"))

    a, b, c = weights(1, "a"), weights(1, "b"), weights(2, "c")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
