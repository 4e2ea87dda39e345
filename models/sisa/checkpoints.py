"""Content-addressed slice checkpoints: model and optimizer state after training slices 0..r."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.artifacts import ArtifactNotFound, ArtifactStore
from models.sisa.config import SisaConfig
from models.sisa.records import encode_keys

__all__ = [
    "CHECKPOINT_PREFIX",
    "EARLY_STOPPING_PROCEDURE",
    "TRAINING_PROCEDURE",
    "Checkpoint",
    "checkpoint_id",
    "checkpoint_ids",
    "checkpoint_key",
    "latest_matching",
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


def _prefix_hasher() -> Any:
    return hashlib.sha256(b"lethe-sisa-prefix/v1")


def _add_slice(hasher: Any, keys: Sequence[str]) -> None:
    # The key count marks where one slice ends, so moving a key across a slice boundary changes
    # the address even though the flat key sequence stays the same.
    if isinstance(keys, str):
        raise TypeError("prefix_keys must hold one sequence of keys per slice, not bare strings")
    hasher.update(len(keys).to_bytes(8, "big"))
    hasher.update(encode_keys(keys))


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
    hasher = _prefix_hasher()
    for keys in prefix_keys:
        _add_slice(hasher, keys)
    return _address(config.fingerprint(), shard, slice_index, hasher.hexdigest())


def checkpoint_ids(
    config: SisaConfig, shard: int, keys_by_slice: Sequence[Sequence[str]]
) -> list[str]:
    """``checkpoint_id`` for every slice at once, hashing each key once."""
    fingerprint = config.fingerprint()
    hasher = _prefix_hasher()
    ids: list[str] = []
    for slice_index, keys in enumerate(keys_by_slice):
        _add_slice(hasher, keys)
        ids.append(_address(fingerprint, shard, slice_index, hasher.copy().hexdigest()))
    return ids


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


@dataclass(frozen=True)
class Checkpoint:
    model_state: Mapping[str, torch.Tensor]
    optimizer_state: Mapping[str, Any]
    meta: Mapping[str, Any]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(
            {
                "model": dict(self.model_state),
                "optimizer": dict(self.optimizer_state),
                "meta": dict(self.meta),
            },
            buffer,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        # weights_only: checkpoints may come from shared storage, and unpickling arbitrary
        # objects from it would be code execution.
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(payload["model"], payload["optimizer"], payload["meta"])


def save_checkpoint(store: ArtifactStore, checkpoint: str, value: Checkpoint) -> None:
    store.put(checkpoint_key(checkpoint), value.to_bytes())


def load_checkpoint(store: ArtifactStore, checkpoint: str) -> Checkpoint:
    return Checkpoint.from_bytes(store.get(checkpoint_key(checkpoint)))


def latest_matching(
    ids: Sequence[str],
    load: Callable[[str], Checkpoint],
    matches: Callable[[int, Checkpoint], bool],
) -> tuple[int, Checkpoint | None]:
    """The last slice whose checkpoint is stored and ``matches`` (made from these very inputs
    on this runtime); returns (first slice still to train, that checkpoint). Shared by every
    sliced trainer: resuming anywhere else would not equal training from scratch."""
    for slice_index in range(len(ids) - 1, -1, -1):
        try:
            checkpoint = load(ids[slice_index])
        except ArtifactNotFound:
            continue
        if matches(slice_index, checkpoint):
            return slice_index + 1, checkpoint
    return 0, None
