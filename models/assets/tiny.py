"""A tiny causal LM that memorises a few dozen Q/A facts in seconds on a CPU, for tests.

Everything is built locally: a byte-level BPE tokenizer trained on the facts themselves, a
two-layer Llama, and a chat template of the form "Q: …\\nA:", saved as an ordinary Hugging Face
directory so it loads through exactly the path (`Generator.from_dir`) that real models take.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from models.generative.conversation import Conversation, Prompt
from models.generative.qa_data import collate, qa_example

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
# A system message (refinement's instruction) goes on its own line before the question.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}Q: {{ m['content'] }}\nA:"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] }}{{ eos_token }}\n"
    "{% endif %}"
    "{% endfor %}"
)


def train_tokenizer(texts: Sequence[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Byte-level BPE over `texts`. Small vocabularies split names into several tokens."""
    bpe = Tokenizer(models.BPE(unk_token=UNK))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(tokenizer: Any, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def train_tiny_qa(
    pairs: Sequence[tuple[Prompt, str]],
    out_dir: str | Path,
    seed: int = 0,
    *,
    steps: int = 160,
    lr: float = 1e-2,
    batch_size: int = 16,
    layers: int = 2,
) -> Path:
    """Train a tiny LM on (question, answer) pairs until it recites them; save it to `out_dir`.
    A question may be a conversation: the answer then follows its last turn.

    Deterministic for a given seed (and thread count): the weights, the tokenizer and the batch
    order all derive from `seed`.
    """
    out = Path(out_dir)
    texts = [f"Q: {q.context() if isinstance(q, Conversation) else q}\nA: {a}" for q, a in pairs]
    tokenizer = train_tokenizer(texts)
    examples = [qa_example(tokenizer, q, a, tokenizer.eos_token_id) for q, a in pairs]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = LlamaForCausalLM(tiny_config(tokenizer, layers))
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=steps, pct_start=0.1
        )
        order = random.Random(seed)
        for _ in range(steps):
            picked = order.sample(examples, min(batch_size, len(examples)))
            batch = collate(picked, tokenizer.pad_token_id)
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()

    model.eval()
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
