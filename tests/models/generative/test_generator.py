"""The generator on the tiny LM: sampling is the same for the same seed, and a plain prompt gives
what the chat template gives."""

from __future__ import annotations

from pathlib import Path

import torch

from models.generative.generator import Generator
from tests.support.tiny_facts import NAMES


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
