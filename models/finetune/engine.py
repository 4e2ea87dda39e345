"""A sliced fine-tune (in one slice order) as a slice-retrain engine
(``models.slicing.engine``): its training, checkpoint addresses and bit-exact check. What only
a language model has (switching slices off, merged serving weights, slice orders) stays in
``unlearning``, ``serving`` and ``orders``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import ArtifactStore
from models.finetune.adapter import PrefixCache
from models.finetune.checkpoints import base_model_id, checkpoint_ids
from models.finetune.config import FinetuneConfig
from models.finetune.records import FinetuneRecord, keys_by_slice
from models.finetune.training import FinetuneResult, train_sliced
from models.finetune.unlearning import verify_bit_exact
from models.slicing.engine import Progress, SliceRetrainEngine
from models.slicing.exactness import ExactnessCheck

__all__ = ["FinetuneEngine"]


@dataclass(frozen=True)
class FinetuneEngine(SliceRetrainEngine[FinetuneRecord, FinetuneResult]):
    """The fine-tune of the base model in ``base_dir`` (content id ``base_id``) under
    ``config``; ``prefix_cache`` keeps frozen-prefix activations between its trainings."""

    base_dir: Path
    config: FinetuneConfig
    base_id: str
    prefix_cache: PrefixCache | None = None

    @classmethod
    def of(
        cls,
        base_dir: str | Path,
        config: FinetuneConfig,
        *,
        base_id: str | None = None,
        prefix_cache: PrefixCache | None = None,
    ) -> FinetuneEngine:
        """``base_id`` defaults to ``base_model_id(base_dir)`` (hashes the folder once)."""
        base = base_id if base_id is not None else base_model_id(base_dir)
        return cls(Path(base_dir), config, base, prefix_cache)

    @property
    def slices(self) -> int:
        return self.config.slices

    def checkpoint_ids(self, records: Sequence[FinetuneRecord]) -> list[str]:
        return checkpoint_ids(self.base_id, self.config, keys_by_slice(self.config, records))

    def train(
        self,
        records: Sequence[FinetuneRecord],
        store: ArtifactStore,
        *,
        progress: Progress | None = None,
    ) -> FinetuneResult:
        return train_sliced(
            self.base_dir,
            self.config,
            records,
            store,
            base_id=self.base_id,
            prefix_cache=self.prefix_cache,
            progress=progress,
        )

    def verify(
        self, retained: Sequence[FinetuneRecord], checkpoint: str, store: ArtifactStore
    ) -> ExactnessCheck:
        check, _ = verify_bit_exact(
            self.base_dir, self.config, retained, checkpoint, store, base_id=self.base_id
        )
        return check
