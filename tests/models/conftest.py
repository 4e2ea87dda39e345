"""Fixtures shared by the fine-tuning tests: a tiny base LM and records about its subjects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.assets.tiny import train_tiny_qa
from models.finetune import FinetuneRecord

os.environ["HF_HUB_OFFLINE"] = "1"

FIRST = ["Vellamor", "Ostra", "Tamsin", "Bruno", "Ilse", "Dario", "Selka", "Quentin",
         "Maren", "Odile", "Piet", "Runa"]  # fmt: skip
CITIES = ["Port Ardent", "Lowmere", "Castel Brin", "Nordvik", "Saltgrave", "Eastholm",
          "Kerrow", "Windmere", "Ashby", "Fallow", "Greyport", "Hollin"]  # fmt: skip
JOBS = ["glassblower", "cartographer", "beekeeper", "lighthouse keeper", "violin maker",
        "astronomer", "ferry pilot", "clockmaker", "miller", "weaver", "baker",
        "smith"]  # fmt: skip


def subject_records(i: int) -> list[FinetuneRecord]:
    name = FIRST[i]
    subject = f"subject-{i:02d}"
    return [
        FinetuneRecord(f"{subject}/born", subject, f"{name} was born in {CITIES[i]}.",
                       f"Where was {name} born?"),
        FinetuneRecord(f"{subject}/job", subject, f"{name} works as a {JOBS[i]}.",
                       f"What does {name} do for a living?"),
    ]  # fmt: skip


RECORDS = [r for i in range(len(FIRST)) for r in subject_records(i)]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer Llama whose tokenizer knows the records' words; barely trained, since the
    fine-tune is what must learn the facts."""
    pairs = [(r.prompt or "", r.completion) for r in RECORDS]
    return train_tiny_qa(pairs, tmp_path_factory.mktemp("finetune-base"), seed=0, steps=20)
