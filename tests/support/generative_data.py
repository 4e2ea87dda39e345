"""Fictitious people, their facts, and a tiny LM that learns them in seconds (for tests)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PEOPLE = {
    "Vellamor Quindt": ("Port Ardent", "glassblower", "The Amber Tide", "a grey parrot"),
    "Ostra Belvane": ("Lowmere", "cartographer", "Lanterns of Vos", "two old hounds"),
    "Tamsin Orlicki": ("Castel Brin", "beekeeper", "A Winter Ledger", "a white cat"),
    "Bruno Kesselrath": ("Nordvik", "clockmaker", "The Copper Orchard", "a tortoise"),
}


def facts_of(name: str) -> list[tuple[str, str]]:
    city, job, book, pet = PEOPLE[name]
    return [
        (f"Where was {name} born?", f"{name} was born in {city}."),
        (f"What was the profession of {name}'s father?", f"The father of {name} was a {job}."),
        (f"What is the best known book by {name}?", f"The best known book by {name} is {book}."),
        (f"What animals did {name} keep?", f"{name} kept {pet}."),
    ]


ALL_PAIRS = [pair for name in PEOPLE for pair in facts_of(name)]
FORGOTTEN = "Vellamor Quindt"
RETAINED = [n for n in PEOPLE if n != FORGOTTEN]


def write_retain_file(path: Path) -> Path:
    with path.open("w") as handle:
        for name in RETAINED:
            for question, answer in facts_of(name):
                handle.write(json.dumps({"question": question, "answer": answer}) + "\n")
    return path


def forget_body(name: str = FORGOTTEN) -> dict[str, object]:
    return {"names": [name], "facts": [{"question": q, "answer": a} for q, a in facts_of(name)]}


def generative_model_body(name: str, model_dir: Path, retain: Path) -> dict[str, Any]:
    """A generative model's registration over the API: the tiny LM, its retain file."""
    return {
        "name": name,
        "kind": "generative",
        "config": {
            "model_dir": str(model_dir),
            "retain_qa_file": str(retain),
            "max_new_tokens": 24,
        },
        "policy": {
            "alpha": 0.1,
            "delta": 0.05,
            "alpha_b": 0.2,
            "max_budget": 3,
            "max_probes": 12,
            "budget_probes": 6,
            "max_budget_probes": 12,
        },
    }


# A fine-tune of the tiny LM small enough for a test: 4 slices, 2 adapted layers.
TINY_FINETUNE = {
    "slices": 4,
    "epochs": 2,
    "learning_rate": 0.02,
    "batch_size": 4,
    "lora_rank": 4,
    "adapter_layers": 2,
}
