"""The tiny LM that knows the facts of tests/support/tiny_facts.py, trained once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.assets.tiny import train_tiny_qa
from models.generative.generator import Generator
from tests.support.tiny_facts import PAIRS

os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_qa(PAIRS, tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def generator(tiny_dir: Path) -> Generator:
    return Generator.from_dir(tiny_dir)
