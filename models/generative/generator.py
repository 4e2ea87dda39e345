"""A frozen causal LM behind one call: a prompt or a conversation in, text out, with banned
spans kept out; sampled with a private random stream, optionally streamed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from models.generative.banning import BannedSpansProcessor, TokenIndex
from models.generative.conversation import Conversation, Prompt
from models.generative.refinement import GenerateFn
from models.generative.sampling import SeededSampler, StopStrings, cut_at_stop

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Decoding:
    """How to decode: greedy when `temperature` is 0, else sampled (temperature, then top-p)
    from a private stream seeded by the call's seed."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # Decoding ended at a stop string or the token limit, not where the model ended its answer:
    # the last word may be cut inside ("Port Arde"), which a guard must not let through.
    cut_short: bool = False


def kept_text(done: Completion, held_tail: Callable[[str], int] | None) -> str:
    """The text of `done` that may go out: without the tail `held_tail` holds back when
    decoding was cut short."""
    if held_tail is None or not done.cut_short:
        return done.text
    return done.text[: held_tail(done.text)].rstrip()


class ContextTooLong(ValueError):
    """The prompt and the tokens asked for do not fit the model's context window."""


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> Any:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


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

    @property
    def context_window(self) -> int | None:
        """Most positions the model attends over (prompt + generated), when it says."""
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) else None

    def encode_prompt(self, prompt: Prompt, instruction: str | None = None) -> torch.Tensor:
        """Token ids of the prompt, through the chat template when the tokenizer has one."""
        conversation = prompt if isinstance(prompt, Conversation) else None
        if getattr(self.tokenizer, "chat_template", None):
            if conversation is not None:
                messages = conversation.chat_messages(instruction)
            else:
                messages = [{"role": "user", "content": str(prompt)}]
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
        text = conversation.context() if conversation is not None else str(prompt)
        text = f"{instruction}\n{text}" if instruction else text
        plain: torch.Tensor = self.tokenizer(text, return_tensors="pt")["input_ids"]
        return plain

    def check_fits(self, prompt: Prompt, max_new_tokens: int) -> int:
        """The prompt's length in tokens; ContextTooLong when it and `max_new_tokens` exceed
        the context window."""
        length = int(self.encode_prompt(prompt).shape[1])
        window = self.context_window
        if window is not None and length + max_new_tokens > window:
            raise ContextTooLong(f"{length} prompt tokens + {max_new_tokens} > {window}")
        return length

    def _setup(
        self,
        prompt: Prompt,
        decoding: Decoding,
        banned_phrases: Sequence[str],
        instruction: str | None,
        seed: int | None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        input_ids = self.encode_prompt(prompt, instruction)
        prompt_length = int(input_ids.shape[1])
        processors = LogitsProcessorList()
        if banned_phrases:
            processors.append(
                BannedSpansProcessor(
                    self.tokenizer, self.token_index, banned_phrases, prompt_length
                )
            )
        if decoding.temperature > 0:  # last: it draws among the tokens left possible
            processors.append(
                SeededSampler(0 if seed is None else seed, decoding.temperature, decoding.top_p)
            )
        stopping = StoppingCriteriaList()
        if decoding.stop:
            stopping.append(StopStrings(self.tokenizer, decoding.stop, prompt_length))
        eos = self.model.generation_config.eos_token_id
        if eos is None:  # not `or`: token id 0 is a valid end token
            eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        # Greedy over the processed scores: the sampler, when present, left one token.
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=decoding.max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad if pad is not None else eos,
        )
        kwargs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "generation_config": config,
            "logits_processor": processors,
            "stopping_criteria": stopping,
        }
        return input_ids, kwargs

    def complete(
        self,
        prompt: Prompt,
        decoding: Decoding,
        *,
        banned_phrases: Sequence[str] = (),
        instruction: str | None = None,
        seed: int | None = None,
    ) -> Completion:
        """One whole answer, cut at the first stop string, and why decoding ended."""
        input_ids, kwargs = self._setup(prompt, decoding, banned_phrases, instruction, seed)
        prompt_length = int(input_ids.shape[1])
        with torch.inference_mode():
            output = self.model.generate(**kwargs)
        new = output[0, prompt_length:]
        raw = self.tokenizer.decode(new, skip_special_tokens=True)
        text = cut_at_stop(raw, decoding.stop)
        reason: FinishReason = (
            "length" if text == raw and len(new) >= decoding.max_new_tokens else "stop"
        )
        cut_short = text != raw or reason == "length"
        return Completion(text.strip(), reason, prompt_length, len(new), cut_short)

    def generate(
        self,
        prompt: Prompt,
        *,
        max_new_tokens: int = 64,
        banned_phrases: Sequence[str] = (),
        instruction: str | None = None,
        seed: int | None = None,
        do_sample: bool = False,
        temperature: float = 0.8,
        top_p: float = 0.95,
    ) -> str:
        decoding = Decoding(max_new_tokens, temperature if do_sample else 0.0, top_p)
        return self.complete(
            prompt, decoding, banned_phrases=banned_phrases, instruction=instruction, seed=seed
        ).text

    def stream(self, prompt: Prompt, decoding: Decoding, *, seed: int | None) -> TextStream:
        """The answer as it is decoded, in pieces (see `TextStream`)."""
        return TextStream(self, prompt, decoding, seed)

    def bind(
        self,
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 0.8,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        held_tail: Callable[[str], int] | None = None,
    ) -> GenerateFn:
        """A `GenerateFn` with decoding settings fixed, for `refinement.refine`. An answer cut
        short ends where `held_tail` says (a guard's `Release.cut_end`): a guard screens what
        goes out, and a cut word could be the start of a forgotten one."""
        decoding = Decoding(max_new_tokens, temperature if do_sample else 0.0, top_p, tuple(stop))

        def generate_fn(
            prompt: Prompt,
            *,
            banned_phrases: Sequence[str],
            instruction: str | None,
            seed: int | None,
        ) -> str:
            done = self.complete(
                prompt, decoding, banned_phrases=banned_phrases, instruction=instruction, seed=seed
            )
            return kept_text(done, held_tail)

        return generate_fn


class TextStream:
    """Pieces of one answer as the model decodes it (in a thread of its own), never past a stop
    string; `close()` stops decoding. After the last piece, `finish_reason` says why it ended
    and `completion_tokens` how many tokens were decoded."""

    def __init__(
        self, generator: Generator, prompt: Prompt, decoding: Decoding, seed: int | None
    ) -> None:
        self.decoding = decoding
        self._cancel = threading.Event()
        input_ids, kwargs = generator._setup(prompt, decoding, (), None, seed)
        self.prompt_tokens = int(input_ids.shape[1])
        self._streamer = TextIteratorStreamer(
            generator.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        kwargs["streamer"] = self._streamer
        kwargs["stopping_criteria"].append(_Cancelled(self._cancel))
        self._output: list[torch.Tensor] = []
        self._error: list[BaseException] = []
        self.finish_reason: FinishReason = "stop"
        self.completion_tokens = 0
        self.cut_short = False  # as `Completion.cut_short`

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._output.append(generator.model.generate(**kwargs))
            except BaseException as exc:  # handed to the reader below
                self._error.append(exc)
                self._streamer.end()  # type: ignore[no-untyped-call]

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        stops = self.decoding.stop
        raw, sent = "", 0
        for piece in self._streamer:
            raw += piece
            kept = cut_at_stop(raw, stops)
            visible = kept.strip()
            # Trailing blanks may end the answer (served stripped), and a tail may be the start
            # of a stop string: both wait for the next piece.
            held = 0 if kept != raw else _stop_prefix(visible, stops)
            safe = len(visible[: len(visible) - held].rstrip())
            if safe > sent:
                yield visible[sent:safe]
                sent = safe
            if kept != raw:
                self.close()
                break
        self._thread.join()
        if self._error:
            raise self._error[0]
        visible = cut_at_stop(raw, stops).strip()
        if len(visible) > sent:
            yield visible[sent:]
        self._finish(raw)

    def _finish(self, raw: str) -> None:
        new = len(self._output[0][0]) - self.prompt_tokens if self._output else 0
        self.completion_tokens = new
        stopped = cut_at_stop(raw, self.decoding.stop) != raw
        if not (self._cancel.is_set() or stopped) and new >= self.decoding.max_new_tokens:
            self.finish_reason = "length"
        self.cut_short = stopped or self.finish_reason == "length"


def _stop_prefix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-n:]):
                best = n
                break
    return best
