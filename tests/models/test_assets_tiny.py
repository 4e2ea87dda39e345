"""A tiny LM that knows 40 facts: recall, banned spans during decoding, and the guarded path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.assets.tiny import train_tiny_qa
from models.generative.banning import BannedSpansProcessor
from models.generative.embedder import HashingEmbedder
from models.generative.generator import Generator
from models.generative.normalize import skeleton, words
from models.generative.probes import oracle_reveals
from models.generative.qa_data import exact_recall
from models.generative.refinement import refine
from models.generative.rules import Fact, ForgetSpec, compile_rules
from models.generative.verifier import Verifier

os.environ["HF_HUB_OFFLINE"] = "1"

NAMES = ["Vellamor Quindt", "Ostra Belvane", "Tamsin Orlicki", "Bruno Kesselrath",
         "Ilse Marwood", "Dario Fenwhistle", "Selka Varnholt", "Quentin Abernathe"]  # fmt: skip
CITIES = ["Port Ardent", "Lowmere", "Castel Brin", "Nordvik",
          "Saltgrave", "Eastholm", "Kerrow", "Windmere"]  # fmt: skip
JOBS = ["glassblower", "cartographer", "beekeeper", "lighthouse keeper",
        "violin maker", "astronomer", "ferry pilot", "clockmaker"]  # fmt: skip
BOOKS = ["The Amber Tide", "Lanterns of Vos", "A Winter Ledger", "The Copper Orchard",
         "Salt and Silence", "The Ninth Harbor", "Quiet Engines", "The Glass Meridian"]  # fmt: skip
YEARS = ["1961", "1974", "1983", "1958", "1990", "1969", "1977", "1986"]
PETS = ["a grey parrot", "two old hounds", "a white cat", "a tortoise",
        "a black horse", "three goats", "a red fox", "a barn owl"]  # fmt: skip


def subject_facts(i: int) -> list[Fact]:
    n = NAMES[i]
    return [
        Fact(f"Where was {n} born?", f"{n} was born in {CITIES[i]}."),
        Fact(f"What was the profession of {n}'s father?", f"The father of {n} was a {JOBS[i]}."),
        Fact(f"What is the best known book by {n}?", f"The best known book by {n} is {BOOKS[i]}."),
        Fact(f"In which year was {n} born?", f"{n} was born in {YEARS[i]}."),
        Fact(f"What animals did {n} keep?", f"{n} kept {PETS[i]}."),
    ]


FACTS = [f for i in range(len(NAMES)) for f in subject_facts(i)]
PAIRS = [(f.question or "", f.answer) for f in FACTS]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_qa(PAIRS, tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def generator(tiny_dir: Path) -> Generator:
    return Generator.from_dir(tiny_dir)


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


def _completes(prefix: str, token_text: str, span: str) -> bool:
    """Reference definition: the token makes `span` appear, from a word start, for the first
    time in the skeleton of the text."""
    target = skeleton(span)
    before = "".join(words(prefix))
    parts = words(prefix + token_text)
    starts, offset = [], 0
    for part in parts:
        starts.append(offset)
        offset += len(part)
    after = "".join(parts)
    new = [o for o in starts if after.startswith(target, o) and o + len(target) > len(before)]
    return bool(new)


@pytest.mark.parametrize(
    "prefix",
    ["", "The best known book is", "The Amber", "The Amber Ti", "the amber-t", "xAmber Ti", "The"],
)
def test_processor_bans_exactly_the_completing_tokens(generator: Generator, prefix: str) -> None:
    tokenizer = generator.tokenizer
    processor = BannedSpansProcessor(tokenizer, generator.token_index, ["Amber Tide"], 0)
    banned = processor.banned_ids(prefix)
    special = set(tokenizer.all_special_ids)
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        text = tokenizer.decode([token_id])
        assert (token_id in banned) == _completes(prefix, text, "Amber Tide"), (prefix, text)


def test_banned_multi_token_span_is_not_generated(generator: Generator) -> None:
    question = f"What is the best known book by {NAMES[0]}?"
    assert len(generator.tokenizer.tokenize(" The Amber Tide")) >= 4  # really multi-token
    free = generator.generate(question, max_new_tokens=24)
    assert free == f"The best known book by {NAMES[0]} is The Amber Tide."
    for variant in ["The Amber Tide", "amber tide", " AMBER-TIDE", "AmberTide"]:
        guarded = generator.generate(question, max_new_tokens=24, banned_phrases=[variant])
        assert "ambertide" not in skeleton(guarded), (variant, guarded)
        assert guarded.startswith(f"The best known book by {NAMES[0]} is")
    # Other answers are untouched by a ban that does not concern them.
    other = f"Where was {NAMES[1]} born?"
    assert (
        generator.generate(other, banned_phrases=["Amber Tide"])
        == f"{NAMES[1]} was born in Lowmere."
    )


def test_sampling_is_deterministic_per_seed(generator: Generator) -> None:
    question = f"What animals did {NAMES[2]} keep?"
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    runs = [
        generator.generate(question, do_sample=True, seed=s, temperature=3.0, max_new_tokens=12)
        for s in (5, 5, 6, 7, 8)
    ]
    assert torch.equal(torch.rand(1), expected_next)  # caller's RNG stream untouched
    assert runs[0] == runs[1]
    assert len(set(runs)) > 1


def test_plain_prompt_path_matches_chat_template(tiny_dir: Path) -> None:
    chat = Generator.from_dir(tiny_dir)
    plain = Generator.from_dir(tiny_dir)
    plain.tokenizer.chat_template = None
    question = f"Where was {NAMES[3]} born?"
    expected = chat.generate(question, max_new_tokens=16)
    assert plain.generate(f"<bos>Q: {question}\nA:", max_new_tokens=16) == expected


def test_guarded_path_forgets_one_subject_and_keeps_another(generator: Generator) -> None:
    forgotten = subject_facts(0)
    spec = ForgetSpec([NAMES[0]], facts=forgotten)
    verifier = Verifier(compile_rules(spec), HashingEmbedder())
    generate = generator.bind(max_new_tokens=24)

    for fact in forgotten:
        question = fact.question or ""
        unguarded = generate(question, banned_phrases=(), instruction=None, seed=0)
        assert oracle_reveals(unguarded, spec), unguarded  # the model does know it
        result = refine(generate, verifier, question, threshold=0.5, budget=3, seed=0)
        assert not oracle_reveals(result.response, spec), (question, result.response)
        assert result.refused or result.verdicts[-1].score < 0.5

    for fact in subject_facts(4):
        result = refine(generate, verifier, fact.question or "", threshold=0.5, budget=3)
        assert result.accepted and result.rounds_used == 0
        assert result.response == fact.answer
