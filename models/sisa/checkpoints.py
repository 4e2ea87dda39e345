"""Content-addressed checkpoints of a shard: model and optimizer state after training slices
0..r (the checkpoint itself and resuming: ``models.slicing.checkpoints``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from models.artifacts import ArtifactStore
from models.sisa.config import SisaConfig
from models.slicing.checkpoints import Checkpoint, prefix_digests

__all__ = [
    "CHECKPOINT_PREFIX",
    "EARLY_STOPPING_PROCEDURE",
    "TRAINING_PROCEDURE",
    "checkpoint_id",
    "checkpoint_ids",
    "checkpoint_key",
    "load_checkpoint",
    "runtime_tag",
    "save_checkpoint",
]

CHECKPOINT_PREFIX = "checkpoints/"

# Names the training loop. Change it whenever training.py would produce different numbers for
# the same inputs, so no run resumes from a checkpoint the current code would not have written.
TRAINING_PROCEDURE = "lethe-sisa-train/v1"
# The early-stopping schedule (SisaConfig.validation_fraction > 0) is a different loop; the
# fixed-epoch one keeps the v1 name, so checkpoints written before it existed stay resumable.
EARLY_STOPPING_PROCEDURE = "lethe-sisa-train/early-stopping/v1"


# Seeds the prefix digest of a shard's slices (``models.slicing.checkpoints.prefix_digests``).
PREFIX_DOMAIN = b"lethe-sisa-prefix/v1"


def _address(config_fingerprint: str, shard: int, slice_index: int, prefix_digest: str) -> str:
    text = f"lethe-sisa-checkpoint/v1\x1f{config_fingerprint}\x1f{shard}\x1f{slice_index}"
    return hashlib.sha256(f"{text}\x1f{prefix_digest}".encode()).hexdigest()


def checkpoint_id(
    config: SisaConfig, shard: int, slice_index: int, prefix_keys: Sequence[Sequence[str]]
) -> str:
    """Content address of the checkpoint after slice ``slice_index`` of ``shard``.

    sha256 of (config fingerprint, shard, slice index, the record keys of slices
    ``0..slice_index``); ``prefix_keys[s]`` lists slice ``s``'s keys in training order (sorted).
    Two trainings with equal addresses saw the same records in the same order under the same
    hyper-parameters, which is what lets a retrain reuse every checkpoint before the first slice
    it changes.
    """
    if len(prefix_keys) != slice_index + 1:
        raise ValueError(
            f"prefix_keys must list the keys of slices 0..{slice_index} "
            f"({slice_index + 1} sequences), got {len(prefix_keys)}"
        )
    digest = prefix_digests(PREFIX_DOMAIN, prefix_keys)[-1]
    return _address(config.fingerprint(), shard, slice_index, digest)


def checkpoint_ids(
    config: SisaConfig, shard: int, keys_by_slice: Sequence[Sequence[str]]
) -> list[str]:
    """``checkpoint_id`` for every slice at once, hashing each key once."""
    fingerprint = config.fingerprint()
    return [
        _address(fingerprint, shard, slice_index, digest)
        for slice_index, digest in enumerate(prefix_digests(PREFIX_DOMAIN, keys_by_slice))
    ]


def checkpoint_key(checkpoint: str) -> str:
    """Where a checkpoint id lives in the artifact store."""
    return f"{CHECKPOINT_PREFIX}{checkpoint}"


def runtime_tag(config: SisaConfig | None = None) -> dict[str, str]:
    """What besides the inputs decides the exact bits of a trained model.

    Kernels differ between torch releases and between CPU instruction sets, so a checkpoint is
    only resumed from on a runtime with the same tag; elsewhere training restarts earlier.
    """
    early = config is not None and config.early_stopping
    return {
        "procedure": EARLY_STOPPING_PROCEDURE if early else TRAINING_PROCEDURE,
        "torch": str(torch.__version__),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
    }


def save_checkpoint(store: ArtifactStore, checkpoint: str, value: Checkpoint) -> None:
    store.put(checkpoint_key(checkpoint), value.to_bytes())


def load_checkpoint(store: ArtifactStore, checkpoint: str) -> Checkpoint:
    return Checkpoint.from_bytes(store.get(checkpoint_key(checkpoint)))
