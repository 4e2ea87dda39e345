"""A frozen causal LM behind one call: prompt in, text out, with banned spans kept out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
)

from models.generative.banning import BannedSpansProcessor, TokenIndex
from models.generative.refinement import GenerateFn


class Generator:
    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._index: TokenIndex | None = None

    @classmethod
    def from_dir(cls, path: str | Path) -> Generator:
        """Load a local Hugging Face model directory; never reaches a hub."""
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=torch.float32
        )
        return cls(model, tokenizer)

    @property
    def token_index(self) -> TokenIndex:
        # Built on first use: decoding the whole vocabulary takes a fraction of a second.
        if self._index is None:
            self._index = TokenIndex(self.tokenizer)
        return self._index

    def encode_prompt(self, prompt: str, instruction: str | None = None) -> torch.Tensor:
        """Token ids of the prompt, through the chat template when the tokenizer has one."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}]
            if instruction:
                messages.insert(0, {"role": "system", "content": instruction})
            encoded = self.tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
                # Control tokens typed into a prompt stay text, not turn markers.
                sanitize_control_tokens=True,
            )
            ids: torch.Tensor = encoded["input_ids"]
            return ids
        text = f"{instruction}\n{prompt}" if instruction else prompt
        plain: torch.Tensor = self.tokenizer(text, return_tensors="pt")["input_ids"]
        return plain

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 64,
        banned_phrases: Sequence[str] = (),
        instruction: str | None = None,
        seed: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.8,
        top_p: float = 0.95,
    ) -> str:
        input_ids = self.encode_prompt(prompt, instruction)
        prompt_length = int(input_ids.shape[1])
        processors = LogitsProcessorList()
        if banned_phrases:
            processors.append(
                BannedSpansProcessor(
                    self.tokenizer, self.token_index, banned_phrases, prompt_length
                )
            )
        eos = self.model.generation_config.eos_token_id
        if eos is None:  # not `or`: token id 0 is a valid end token
            eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            eos_token_id=eos,
            pad_token_id=pad if pad is not None else eos,
            **({"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}),
        )
        # A private RNG stream: the same seed gives the same text, and callers' global torch
        # RNG state is left as it was.
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(0 if seed is None else seed)
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=config,
                logits_processor=processors,
            )
        text: str = self.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)
        return text.strip()

    def bind(
        self, *, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 0.8
    ) -> GenerateFn:
        """A `GenerateFn` with decoding settings fixed, for `refinement.refine`."""

        def generate_fn(
            prompt: str,
            *,
            banned_phrases: Sequence[str],
            instruction: str | None,
            seed: int | None,
        ) -> str:
            return self.generate(
                prompt,
                max_new_tokens=max_new_tokens,
                banned_phrases=banned_phrases,
                instruction=instruction,
                seed=seed,
                do_sample=do_sample,
                temperature=temperature,
            )

        return generate_fn
