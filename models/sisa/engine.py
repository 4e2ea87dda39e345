"""One SISA shard as a slice-retrain engine (``models.slicing.engine``): its training,
checkpoint addresses and bit-exact check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.artifacts import ArtifactStore
from models.sisa.checkpoints import checkpoint_ids
from models.sisa.config import SisaConfig
from models.sisa.exactness import verify_bit_exact
from models.sisa.records import TrainingRecord, keys_by_slice
from models.sisa.training import ShardTrainingResult, train_shard
from models.slicing.engine import Progress, SliceRetrainEngine
from models.slicing.exactness import ExactnessCheck

__all__ = ["ShardEngine"]


@dataclass(frozen=True)
class ShardEngine(SliceRetrainEngine[TrainingRecord, ShardTrainingResult]):
    """Shard ``shard`` of a SISA ensemble trained under ``config``."""

    config: SisaConfig
    shard: int

    @property
    def slices(self) -> int:
        return self.config.slices

    def checkpoint_ids(self, records: Sequence[TrainingRecord]) -> list[str]:
        return checkpoint_ids(self.config, self.shard, keys_by_slice(self.config, records))

    def train(
        self,
        records: Sequence[TrainingRecord],
        store: ArtifactStore,
        *,
        progress: Progress | None = None,
    ) -> ShardTrainingResult:
        return train_shard(self.config, self.shard, records, store, progress=progress)

    def verify(
        self, retained: Sequence[TrainingRecord], checkpoint: str, store: ArtifactStore
    ) -> ExactnessCheck:
        return verify_bit_exact(self.config, self.shard, retained, checkpoint, store)
