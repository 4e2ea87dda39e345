"""The hyper-parameters of a sliced fine-tune; part of every checkpoint's content address."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["DEFAULT_TARGET_MODULES", "FinetuneConfig", "Placement"]

Placement = Literal["hash", "likely_last"]

# Every linear map of a Llama-style decoder layer: adapting attention and MLP both is what lets a
# rank-8 adapter on a few layers memorise short answers.
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass(frozen=True)
class FinetuneConfig:
    """R slices trained cumulatively (slice r on slices 0..r) with LoRA adapters on the top
    ``adapter_layers`` decoder layers.

    ``epochs`` counts equivalent passes over all records, as for SISA: each slice runs
    ``slice_epochs = ceil(2 * epochs / (R + 1))`` epochs over its prefix, which keeps the total
    work near ``epochs`` unsliced passes. ``placement`` chooses how subjects map to slices:
    ``hash`` spreads them by a keyed hash; ``likely_last`` puts subjects flagged as likely to be
    erased into the last ``late_slices`` slices (ARCANE), so erasing them retrains little.
    """

    slices: int = 8
    epochs: int = 4
    learning_rate: float = 2e-3
    batch_size: int = 8
    seed: int = 0
    partition_salt: str = "lethe"
    lora_rank: int = 8
    lora_alpha: int = 16
    adapter_layers: int = 4
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    max_grad_norm: float = 1.0
    placement: Placement = "hash"
    late_slices: int = 2
    num_threads: int = 1
    layered: bool = False
    slice_order: tuple[int, ...] = ()
    """S3T's permutations: ``slice_order[p]`` is the bucket of subjects trained at position
    ``p`` (empty: bucket p at position p). Several orders of one fine-tune are trained as
    separate fine-tunes; an erasure serves the order where its subjects sit deepest."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        object.__setattr__(self, "max_grad_norm", float(self.max_grad_norm))
        object.__setattr__(self, "target_modules", tuple(str(m) for m in self.target_modules))
        object.__setattr__(self, "slice_order", tuple(int(b) for b in self.slice_order))
        checks = {
            "slices": self.slices >= 1,
            "epochs": self.epochs >= 1,
            "learning_rate": math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "batch_size": self.batch_size >= 1,
            "partition_salt": bool(self.partition_salt),
            "lora_rank": self.lora_rank >= 1,
            "lora_alpha": self.lora_alpha >= 1,
            "adapter_layers": self.adapter_layers >= 1,
            "target_modules": bool(self.target_modules),
            "max_grad_norm": math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0,
            "placement": self.placement in ("hash", "likely_last"),
            # likely_last needs at least one slice for the subjects not flagged.
            "late_slices": 1 <= self.late_slices < self.slices or self.placement == "hash",
            "num_threads": self.num_threads >= 1,
            # Every slice needs a layer group of its own.
            "layered": not self.layered or self.adapter_layers >= self.slices,
            "slice_order": not self.slice_order
            or sorted(self.slice_order) == list(range(self.slices)),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid FinetuneConfig field(s): {', '.join(bad)}")

    @property
    def slice_epochs(self) -> int:
        """Epochs run after adding each slice (see the class docstring)."""
        return math.ceil(2 * self.epochs / (self.slices + 1))

    def position(self, bucket: int) -> int:
        """The training position of the subjects placed in ``bucket`` (see ``slice_order``)."""
        return self.slice_order.index(bucket) if self.slice_order else bucket

    def layer_group(self, slice_index: int) -> tuple[int, int]:
        """Layered: the adapted layers of slice ``slice_index``, as offsets [lo, hi) into the
        top ``adapter_layers`` layers (bottom first, as even as the counts allow)."""
        lo = slice_index * self.adapter_layers // self.slices
        return lo, (slice_index + 1) * self.adapter_layers // self.slices

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        data["slice_order"] = list(self.slice_order)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "target_modules" in known:
            known["target_modules"] = tuple(known["target_modules"])
        if "slice_order" in known:
            known["slice_order"] = tuple(known["slice_order"] or ())
        return cls(**known)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form; equal configs, equal fingerprints.

        The thread count is included: a reduction split over another number of threads sums in
        another order, so it changes the trained bits. ``layered`` counts only when set, so
        fine-tunes trained before it existed keep their checkpoint addresses; so does
        ``slice_order`` when empty.
        """
        data = self.to_dict()
        if not self.layered:
            del data["layered"]
        if not self.slice_order:
            del data["slice_order"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
