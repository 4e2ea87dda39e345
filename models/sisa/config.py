"""The hyper-parameters that define a SISA ensemble; part of every checkpoint's content address."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["SisaConfig"]


@dataclass(frozen=True)
class SisaConfig:
    """S shards (one model each) of R slices, trained incrementally with a checkpoint per slice.

    ``epochs`` counts equivalent passes over the full data, as for ordinary training. Slice ``r``
    trains on the union of slices ``0..r``, so with ``e'`` epochs per slice a shard of size ``|D|``
    costs about ``e' * |D| * (R + 1) / 2`` sample passes. Choosing
    ``e' = ceil(2 * epochs / (R + 1))`` (``slice_epochs``) keeps the total work close to
    ``epochs`` unsliced passes (SISA, Bourtoule et al. 2021, section V).
    """

    shards: int
    slices: int
    input_dim: int
    num_classes: int
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 20
    learning_rate: float = 1e-2
    batch_size: int = 64
    seed: int = 0
    partition_salt: str = "lethe"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        checks = {
            "shards": self.shards >= 1,
            "slices": self.slices >= 1,
            "input_dim": self.input_dim >= 1,
            "num_classes": self.num_classes >= 2,
            "hidden": all(h >= 1 for h in self.hidden),
            "epochs": self.epochs >= 1,
            "learning_rate": math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "batch_size": self.batch_size >= 1,
            "partition_salt": bool(self.partition_salt),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid SisaConfig field(s): {', '.join(bad)}")

    @property
    def slice_epochs(self) -> int:
        """Epochs run after adding each slice (see the class docstring)."""
        return math.ceil(2 * self.epochs / (self.slices + 1))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SisaConfig:
        return cls(
            shards=int(data["shards"]),
            slices=int(data["slices"]),
            input_dim=int(data["input_dim"]),
            num_classes=int(data["num_classes"]),
            hidden=tuple(int(h) for h in data.get("hidden", (64, 32))),
            epochs=int(data.get("epochs", 20)),
            learning_rate=float(data.get("learning_rate", 1e-2)),
            batch_size=int(data.get("batch_size", 64)),
            seed=int(data.get("seed", 0)),
            partition_salt=str(data.get("partition_salt", "lethe")),
        )

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form; equal configs, equal fingerprints."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
