"""The hyper-parameters that define a SISA ensemble; part of every checkpoint's content address."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "DEFAULT_SLICES",
    "LEGACY_VALUES",
    "MAX_DEFAULT_SHARDS",
    "RECORDS_PER_SHARD",
    "SisaConfig",
    "default_shards",
]

# The default (S, R) when a model does not choose: S from the number of training records, so
# that a small table is not cut into shards too small to learn from (the cause of the default
# ensemble's accuracy gap to one model; measured by bench/sisa_defaults.py, see the README).
RECORDS_PER_SHARD = 500
MAX_DEFAULT_SHARDS = 16
DEFAULT_SLICES = 8


def default_shards(num_records: int) -> int:
    """One shard per ``RECORDS_PER_SHARD`` training records, between 1 and
    ``MAX_DEFAULT_SHARDS``: a shard of fewer records loses accuracy against one model on all the
    data faster than the per-request speed-up it buys is worth."""
    if num_records < 0:
        raise ValueError("num_records must be >= 0")
    return max(1, min(MAX_DEFAULT_SHARDS, num_records // RECORDS_PER_SHARD))


# The values of the fields added after v1 that reproduce v1 training exactly. A field at its
# legacy value is left out of the fingerprint, so a config stored before the field existed keeps
# its fingerprint (and its checkpoints stay resumable); any other value changes the numbers and
# therefore the fingerprint. ``from_dict`` fills a missing field with its legacy value, because
# a stored config without the field was trained the v1 way.
LEGACY_VALUES: dict[str, Any] = {
    "validation_fraction": 0.0,
    "patience": 5,
    "max_rounds": 60,
    "tail_slices": 0,
    "base_hash": "",
}


@dataclass(frozen=True)
class SisaConfig:
    """S shards (one model each) of R slices, trained incrementally with a checkpoint per slice.

    Two schedules:

    - **early stopping** (``validation_fraction > 0``, the default): a fixed part of each shard's
      records, chosen by a keyed hash of the record key, is held out for validation; after each
      slice is added, training runs in rounds (whole epochs, at least 20 optimizer steps) until
      the validation loss has not improved for ``patience`` rounds (at most ``max_rounds``) and
      keeps the best round's model and optimizer. The split and the stopping epoch depend only
      on the records, so exactness is unaffected.
    - **fixed epochs** (``validation_fraction == 0``, v1): ``epochs`` counts equivalent passes
      over the full data. Slice ``r`` trains on slices ``0..r``, so with ``e'`` epochs per slice a
      shard of size ``|D|`` costs about ``e' * |D| * (R + 1) / 2`` sample passes;
      ``e' = ceil(2 * epochs / (R + 1))`` (``slice_epochs``) keeps the total close to ``epochs``
      unsliced passes (SISA, Bourtoule et al. 2021, section V).

    ``tail_slices > 0`` reserves the last slices for records flagged as likely to be erased
    (ARCANE-style placement, see ``assign_slice``). ``base_hash`` names the frozen public feature
    extractor the records' features came from (``PublicBase.content_hash``), or "" for none.
    """

    shards: int
    slices: int
    input_dim: int
    num_classes: int
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 20
    learning_rate: float = 3e-3
    batch_size: int = 32
    seed: int = 0
    partition_salt: str = "lethe"
    validation_fraction: float = 0.15
    patience: int = 5
    max_rounds: int = 60
    tail_slices: int = 0
    base_hash: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        object.__setattr__(self, "validation_fraction", float(self.validation_fraction))
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
            "validation_fraction": 0.0 <= self.validation_fraction < 0.5,
            "patience": self.patience >= 1,
            "max_rounds": self.max_rounds >= 1,
            "tail_slices": 0 <= self.tail_slices < self.slices,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid SisaConfig field(s): {', '.join(bad)}")

    @property
    def early_stopping(self) -> bool:
        return self.validation_fraction > 0

    @property
    def slice_epochs(self) -> int:
        """Epochs run after adding each slice under the fixed schedule (class docstring)."""
        return math.ceil(2 * self.epochs / (self.slices + 1))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SisaConfig:
        def new_field(name: str) -> Any:
            return data.get(name, LEGACY_VALUES[name])

        return cls(
            shards=int(data["shards"]),
            slices=int(data["slices"]),
            input_dim=int(data["input_dim"]),
            num_classes=int(data["num_classes"]),
            hidden=tuple(int(h) for h in data.get("hidden", (64, 32))),
            epochs=int(data.get("epochs", 20)),
            # v1 defaults: a stored config without these fields was built with them.
            learning_rate=float(data.get("learning_rate", 1e-2)),
            batch_size=int(data.get("batch_size", 64)),
            seed=int(data.get("seed", 0)),
            partition_salt=str(data.get("partition_salt", "lethe")),
            validation_fraction=float(new_field("validation_fraction")),
            patience=int(new_field("patience")),
            max_rounds=int(new_field("max_rounds")),
            tail_slices=int(new_field("tail_slices")),
            base_hash=str(new_field("base_hash")),
        )

    def replace(self, **changes: Any) -> SisaConfig:
        return SisaConfig.from_dict({**self.to_dict(), **changes})

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON form; equal configs, equal fingerprints.

        Fields added after v1 enter only when they differ from their legacy value, and the
        early-stopping knobs only when early stopping is on (they change nothing otherwise).
        """
        data = self.to_dict()
        for name, legacy in LEGACY_VALUES.items():
            if data[name] == legacy:
                del data[name]
        if not self.early_stopping:
            data.pop("patience", None)
            data.pop("max_rounds", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
