"""What every sliced trainer stores after a slice, and how it is addressed, found and destroyed.

A checkpoint holds the model and optimizer state after training slices 0..r; its id is a hash
of the records those slices held, in training order. Two trainings with equal ids saw the same
records in the same order, which is what lets a retrain reuse every checkpoint before the first
slice it changes, and lets a check know, before it trains, which checkpoint it must equal.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.artifacts import ArtifactNotFound, ArtifactStore

__all__ = [
    "Checkpoint",
    "destroy_checkpoints",
    "encode_keys",
    "latest_matching",
    "prefix_digests",
]


def encode_keys(keys: Iterable[str]) -> bytes:
    """Length-prefixed UTF-8, so no two different key lists share an encoding."""
    parts: list[bytes] = []
    for key in keys:
        raw = key.encode("utf-8")
        parts.append(len(raw).to_bytes(8, "big"))
        parts.append(raw)
    return b"".join(parts)


def prefix_digests(domain: bytes, keys_by_slice: Sequence[Sequence[str]]) -> list[str]:
    """Index r: sha256 (seeded with ``domain``) over the record keys of slices 0..r, each slice
    preceded by its key count, hashing every key once.

    The key count marks where one slice ends, so moving a key across a slice boundary changes
    the digest even though the flat key sequence stays the same. Each trainer folds the digest
    into its own address (with its config, shard or base model).
    """
    hasher = hashlib.sha256(domain)
    digests: list[str] = []
    for keys in keys_by_slice:
        if isinstance(keys, str):
            raise TypeError("keys_by_slice must hold one sequence of keys per slice")
        hasher.update(len(keys).to_bytes(8, "big"))
        hasher.update(encode_keys(keys))
        digests.append(hasher.copy().hexdigest())
    return digests


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


def destroy_checkpoints(
    store: ArtifactStore, checkpoints: Sequence[str], key_of: Callable[[str], str]
) -> list[dict[str, Any]]:
    """Delete ``checkpoints`` (stored under ``key_of(id)``) from ``store``; one entry per id
    with the sha256 and size of the bytes destroyed (for the certificate), ``deleted`` false
    when it was already gone."""
    destroyed: list[dict[str, Any]] = []
    for checkpoint in checkpoints:
        key = key_of(checkpoint)
        try:
            data = store.get(key)
        except ArtifactNotFound:
            destroyed.append({"checkpoint": checkpoint, "key": key, "deleted": False})
            continue
        deleted = store.delete(key)
        destroyed.append(
            {
                "checkpoint": checkpoint,
                "key": key,
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
                "deleted": deleted and not store.exists(key),
            }
        )
    return destroyed
