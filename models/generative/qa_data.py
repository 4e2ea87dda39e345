"""Question→answer pairs as causal-LM training examples, and exact-recall measurement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from models.generative.conversation import Conversation, Prompt
from models.generative.generator import Generator
from models.generative.normalize import words

IGNORE = -100


def end_of_turn_id(model: Any, tokenizer: Any) -> int:
    """The token that ends an assistant turn (chat models: "<|im_end|>", not "<|endoftext|>")."""
    eos = model.generation_config.eos_token_id
    if isinstance(eos, list):
        eos = eos[0]
    return int(eos if eos is not None else tokenizer.eos_token_id)


def qa_example(
    tokenizer: Any, question: Prompt, answer: str, eos_id: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels) for one pair; the loss covers only the answer and the end token.

    `question`: one question, or a conversation whose last turn the answer follows. The prompt
    is rendered exactly as `Generator` renders it at inference time, so training and serving
    see the same text.
    """
    messages = (
        question.chat_messages()
        if isinstance(question, Conversation)
        else [{"role": "user", "content": question}]
    )
    rendered: str = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    prompt: list[int] = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # Templates that end in "A:" need a space before the answer; those ending in "\n" do not.
    spaced = answer if rendered[-1:].isspace() else " " + answer
    target: list[int] = tokenizer(spaced, add_special_tokens=False)["input_ids"]
    target = [*target, eos_id]
    return [*prompt, *target], [IGNORE] * len(prompt) + target


def collate(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded batch; padded positions are masked out of attention and of the loss."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def exact_recall(
    generator: Generator, pairs: Sequence[tuple[str, str]], max_new_tokens: int = 48
) -> float:
    """Share of questions whose greedy answer equals the trained answer (folded words)."""
    if not pairs:
        return 0.0
    hits = sum(
        words(generator.generate(q, max_new_tokens=max_new_tokens, do_sample=False)) == words(a)
        for q, a in pairs
    )
    return hits / len(pairs)
