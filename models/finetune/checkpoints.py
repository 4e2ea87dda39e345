"""Content-addressed slice checkpoints of a fine-tune: adapter and optimizer state after
training slices 0..r, in an ``ArtifactStore``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.artifacts import ArtifactStore
from models.finetune.config import FinetuneConfig
from models.slicing import checkpoints as slicing
from models.slicing.checkpoints import Checkpoint, encode_keys, prefix_digests

__all__ = [
    "CHECKPOINT_PREFIX",
    "TRAINING_PROCEDURE",
    "base_model_id",
    "checkpoint_ids",
    "checkpoint_key",
    "destroy_checkpoints",
    "initial_checkpoint_id",
    "load_checkpoint",
    "runtime_tag",
    "save_checkpoint",
]

CHECKPOINT_PREFIX = "finetune-checkpoints/"

# Names the training loop. Change it whenever training.py or adapter.py would produce different
# numbers for the same inputs, so no run resumes from a checkpoint the current code would not
# have written.
TRAINING_PROCEDURE = "lethe-finetune-lora/v1"
# Seeds the prefix digest of a fine-tune's slices (``models.slicing.checkpoints.prefix_digests``).
PREFIX_DOMAIN = b"lethe-finetune-prefix/v1"


def base_model_id(model_dir: str | Path) -> str:
    """Content id of a base model folder: sha256 over every file's name and contents.

    The tokenizer files count as much as the weights: they decide the token ids trained on.
    Dot-files and lethe's own metadata are skipped.
    """
    root = Path(model_dir)
    digest = hashlib.sha256(b"lethe-base-model/v1")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or relative.startswith(
            "lethe_"
        ):
            continue
        file_digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                file_digest.update(block)
        digest.update(encode_keys([relative, file_digest.hexdigest()]))
    return digest.hexdigest()


def checkpoint_ids(
    base_id: str, config: FinetuneConfig, keys_by_slice: Sequence[Sequence[str]]
) -> list[str]:
    """Index r: the content address of the checkpoint after slice r.

    sha256 of (training procedure, base model id, config fingerprint, slice index, the ordered
    record keys of slices 0..r with each slice's length). Equal addresses mean the same records
    in the same order under the same hyper-parameters on the same base, which is what lets a
    retrain reuse every checkpoint before the first slice it changes.
    """
    header = f"{TRAINING_PROCEDURE}\x1f{base_id}\x1f{config.fingerprint()}"
    return [
        hashlib.sha256(f"{header}\x1f{slice_index}\x1f{digest}".encode()).hexdigest()
        for slice_index, digest in enumerate(prefix_digests(PREFIX_DOMAIN, keys_by_slice))
    ]


def initial_checkpoint_id(base_id: str, config: FinetuneConfig) -> str:
    """The content address of a layered fine-tune's adapters before any slice: what is served
    when an erasure switches off every slice. Depends on no record."""
    text = f"{TRAINING_PROCEDURE}\x1f{base_id}\x1f{config.fingerprint()}\x1finitial"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_key(checkpoint: str) -> str:
    """Where a checkpoint id lives in the artifact store."""
    return f"{CHECKPOINT_PREFIX}{checkpoint}"


def runtime_tag(num_threads: int) -> dict[str, str]:
    """What besides the inputs decides the exact bits: kernels differ between torch releases
    and CPU instruction sets, so a checkpoint is resumed from only on an equal runtime."""
    return {
        "procedure": TRAINING_PROCEDURE,
        "torch": str(torch.__version__),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "threads": str(num_threads),
    }


def save_checkpoint(store: ArtifactStore, checkpoint: str, value: Checkpoint) -> int:
    """Store ``value``; returns its size in bytes."""
    data = value.to_bytes()
    store.put(checkpoint_key(checkpoint), data)
    return len(data)


def load_checkpoint(store: ArtifactStore, checkpoint: str) -> Checkpoint:
    return Checkpoint.from_bytes(store.get(checkpoint_key(checkpoint)))


def destroy_checkpoints(store: ArtifactStore, checkpoints: Sequence[str]) -> list[dict[str, Any]]:
    """Delete ``checkpoints`` from ``store``; one entry per id with the sha256 and size of the
    bytes destroyed (for the certificate), ``deleted`` false when it was already gone."""
    return slicing.destroy_checkpoints(store, checkpoints, checkpoint_key)
