"""A base causal LM with LoRA adapters on its top layers, trained from cached frozen activations.

Only the top ``adapter_layers`` decoder layers carry adapters, so the layers below them compute
the same activations for a record at every step of every training run. They are computed once
per record (one record at a time, so the result never depends on batch composition) and the
training steps run only the adapted layers, the final norm and the output head on the answer
positions. A self-check compares this path's loss with the model's own full forward before any
training, so an architecture where the split does not hold (e.g. one that rescales its input
embeddings) is refused instead of trained wrongly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from torch.nn import functional
from transformers import AutoModelForCausalLM, AutoTokenizer

from models.finetune.config import FinetuneConfig
from models.finetune.records import Example
from models.generative.qa_data import IGNORE, collate, end_of_turn_id
from models.slicing.determinism import derive_seed

__all__ = ["AdaptedModel", "PrefixCache"]

_LAYER = re.compile(r"\.layers\.(\d+)\.")


class _Stop(Exception):
    """Raised from a forward hook once the frozen prefix has produced its output."""


class PrefixCache:
    """Frozen-prefix activations per record, keyed by (base id, split layer, token ids).

    May be shared between trainings on the same base in one process: the activations are a
    function of those inputs only (under a fixed thread count), so sharing changes no bits.
    """

    def __init__(self) -> None:
        self._items: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def key(base_id: str, split: int, ids: Sequence[int], below: str = "") -> str:
        """``below`` names the adapters active under layer ``split`` (a layered fine-tune's
        checkpoint of the slices below); empty when none are."""
        tag = f"{base_id}\x1f{split}\x1f" + (f"{below}\x1f" if below else "")
        digest = hashlib.sha256(tag.encode())
        digest.update(",".join(map(str, ids)).encode())
        return digest.hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        return self._items.get(key)

    def put(self, key: str, value: torch.Tensor) -> None:
        self._items[key] = value


class AdaptedModel:
    """The base model from ``base_dir`` with freshly initialised adapters (seeded by the
    config's seed alone), dropout off, and the names of its trainable tensors."""

    def __init__(self, base_dir: str | Path, config: FinetuneConfig, base_id: str) -> None:
        self.config = config
        self.base_id = base_id
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
        # A private RNG stream seeded from the config: LoRA's A matrices are drawn at random,
        # and must be the same draws in every run that claims the same checkpoint address.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(config.seed, "lora-init"))
            base: Any = AutoModelForCausalLM.from_pretrained(
                str(base_dir), local_files_only=True, dtype=torch.float32
            )
            layers = base.model.layers
            self.split = len(layers) - config.adapter_layers
            if self.split < 0:
                raise ValueError(
                    f"adapter_layers={config.adapter_layers} but the model has {len(layers)}"
                )
            lora = LoraConfig(
                r=config.lora_rank,
                lora_alpha=config.lora_alpha,
                lora_dropout=0.0,
                bias="none",
                target_modules=list(config.target_modules),
                layers_to_transform=list(range(self.split, len(layers))),
                layers_pattern="layers",
            )
            self.peft: Any = get_peft_model(base, lora)
        # Dropout off for good: eval mode changes no gradient of a Llama-style model, and a
        # model without dropout needs no dropout RNG to be reproducible.
        self.peft.train(False)
        causal: Any = self.peft.get_base_model()
        self.causal = causal
        self.trunk: Any = causal.model
        self.head: Any = causal.get_output_embeddings()
        self.eos_id = end_of_turn_id(self.causal, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_id)
        self.trainable: dict[str, nn.Parameter] = {
            name: p for name, p in self.peft.named_parameters() if p.requires_grad
        }
        if not self.trainable:
            raise ValueError(f"no module matched target_modules={list(config.target_modules)}")

    # -- layer-sliced adapters -----------------------------------------------------------------

    def group_start(self, slice_index: int) -> int:
        """The first decoder layer slice ``slice_index`` trains (layered fine-tunes)."""
        return self.split + self.config.layer_group(slice_index)[0]

    def train_slice(self, slice_index: int) -> list[nn.Parameter]:
        """Layered: make only slice ``slice_index``'s adapter trainable; returns its tensors."""
        lo, hi = self.config.layer_group(slice_index)
        chosen: list[nn.Parameter] = []
        for name, p in self.trainable.items():
            match = _LAYER.search(name)
            mine = match is not None and self.split + lo <= int(match.group(1)) < self.split + hi
            p.requires_grad_(mine)
            if mine:
                chosen.append(p)
        if not chosen:
            raise ValueError(f"slice {slice_index} has no adapter tensors")
        return chosen

    # -- adapter state -------------------------------------------------------------------------

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().clone() for name, p in self.trainable.items()}

    def load_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.trainable):
            raise ValueError("adapter state does not match this model's adapter tensors")
        with torch.no_grad():
            for name, p in self.trainable.items():
                p.copy_(state[name])

    def adapter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.trainable.values())

    # -- the two halves of a forward pass ------------------------------------------------------

    def prefix_hidden(
        self,
        ids: Sequence[int],
        cache: PrefixCache,
        *,
        start: int | None = None,
        below: str = "",
    ) -> torch.Tensor:
        """Input of layer ``start`` (default: the first adapted layer) for one record,
        ``[tokens, hidden]``; ``below`` names the adapter state of the layers under it."""
        split = self.split if start is None else start
        key = PrefixCache.key(self.base_id, split, ids, below)
        cached = cache.get(key)
        if cached is not None:
            return cached
        input_ids = torch.tensor([list(ids)], dtype=torch.long)
        # no_grad, not inference_mode: the result is later the input of autograd graphs.
        with torch.no_grad():
            hidden: torch.Tensor
            if split == 0:
                hidden = self.trunk.get_input_embeddings()(input_ids)[0]
            else:
                hidden = self._run_prefix(input_ids, split)
        cache.put(key, hidden)
        return hidden

    def _run_prefix(self, input_ids: torch.Tensor, split: int) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Stop

        handle = self.trunk.layers[split - 1].register_forward_hook(hook)
        try:
            self.trunk(input_ids=input_ids, use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured[0][0].detach().clone()

    @contextmanager
    def _top_layers_only(self, start: int) -> Iterator[None]:
        full = self.trunk.layers
        self.trunk.layers = nn.ModuleList(list(full)[start:])
        try:
            yield
        finally:
            self.trunk.layers = full

    def loss(
        self,
        examples: Sequence[Example],
        hiddens: Sequence[torch.Tensor],
        start: int | None = None,
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled positions of a right-padded batch,
        running only the layers from ``start`` (default: the first adapted one) on the cached
        activations of the layers below."""
        batch = collate(examples, self.pad_id)
        width = batch["input_ids"].shape[1]
        # Padded positions come after every real token, so under the causal mask no real
        # position attends to them and their (zero) activations change nothing.
        padded = torch.stack([functional.pad(h, (0, 0, 0, width - h.shape[0])) for h in hiddens])
        with self._top_layers_only(self.split if start is None else start):
            out = self.trunk(
                inputs_embeds=padded, attention_mask=batch["attention_mask"], use_cache=False
            )
        states = out.last_hidden_state[:, :-1]
        targets = batch["labels"][:, 1:]
        chosen = targets != IGNORE
        logits = self.head(states[chosen])
        return functional.cross_entropy(logits.float(), targets[chosen])

    def self_check(self, example: Example, cache: PrefixCache) -> None:
        """Refuse to train when the split forward disagrees with the model's own forward."""
        batch = collate([example], self.pad_id)
        with torch.no_grad():
            reference = float(self.causal(**batch, use_cache=False).loss)
            ours = float(self.loss([example], [self.prefix_hidden(example[0], cache)]))
        if not abs(reference - ours) <= 1e-4 * max(1.0, abs(reference)):
            raise ValueError(
                "this architecture cannot be trained from cached prefix activations "
                f"(loss {ours} vs {reference} from the full forward)"
            )
