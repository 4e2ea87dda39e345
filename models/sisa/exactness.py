"""The determinism check of a shard: is a stored checkpoint bit for bit what training it from
scratch gives? (the comparison itself: ``models.slicing.exactness``)"""

from __future__ import annotations

import time
from collections.abc import Sequence

from models.artifacts import ArtifactStore
from models.sisa.checkpoints import load_checkpoint
from models.sisa.config import SisaConfig
from models.sisa.records import TrainingRecord
from models.sisa.training import train_shard_in_memory
from models.slicing.exactness import ExactnessCheck, compare_with_checkpoint

__all__ = ["verify_bit_exact"]


def verify_bit_exact(
    config: SisaConfig,
    shard: int,
    retained_records: Sequence[TrainingRecord],
    checkpoint_id: str,
    store: ArtifactStore,
) -> ExactnessCheck:
    """Retrain ``shard`` from scratch on ``retained_records`` (no cache, nothing written) and
    compare every model and optimizer tensor with the stored ``checkpoint_id``.

    Also checks that ``checkpoint_id`` is the content address of exactly these records: a
    checkpoint that matches numerically but claims other data would be a mislabelled lineage.
    """
    started = time.perf_counter()
    stored = load_checkpoint(store, checkpoint_id)
    fresh = train_shard_in_memory(config, shard, retained_records)
    return compare_with_checkpoint(
        stored,
        checkpoint_id,
        fresh.result.final_checkpoint,
        fresh.model.state_dict(),
        fresh.optimizer.state_dict(),
        model_label="model",
        started=started,
    )
