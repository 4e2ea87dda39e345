"""Where lethe keeps bytes outside the database: the artifact store (checkpoints, manifests;
a local folder or an fsspec URL) and the host-local folder of merged fine-tuned weights.

Shared by every domain that trains, serves or destroys artifacts."""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from models.artifacts import ArtifactStore, open_store
from service.core.config import Settings
from service.core.keys import keystore_location


def artifact_store(settings: Settings) -> ArtifactStore:
    return open_store(settings.artifact_location)


def check_stores(settings: Settings) -> None:
    """Refuse to start on a versioned bucket (artifacts or keys) whose old versions lethe
    cannot delete: erased checkpoints and destroyed keys would survive as old versions."""
    for location in dict.fromkeys([settings.artifact_location, keystore_location(settings)]):
        check = getattr(open_store(location), "check_version_deletion", None)
        if check is not None:
            check()


def merged_root(settings: Settings) -> Path:
    """Where merged serving folders live (derived weights: deleted with their checkpoint):
    beside the checkpoints when the artifact store is a local folder, else under data_dir."""
    location = settings.artifact_location
    if "://" not in location:
        return Path(location).resolve() / "serving"
    return Path(settings.data_dir).resolve() / "finetuned"


def write_private(path: Path, data: bytes) -> None:
    """Write a file only lethe's user can read (0600; its folder created 0700): reports and
    exports name requests and models, and lethe writes nothing world-readable."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode otherwise
        handle.write(data)


def drop_stale_merged(settings: Settings, store: ArtifactStore | None = None) -> list[str]:
    """Delete this host's merged-weights folders whose checkpoint is gone from the artifact
    store (an erasure destroyed it, on whichever host it ran): a host-local folder is only a
    cache of a checkpoint, so it goes when the checkpoint goes. The checkpoints dropped."""
    from models.finetune.checkpoints import checkpoint_key  # torch: only when there is work

    root = merged_root(settings)
    if not root.is_dir():
        return []
    store = store or artifact_store(settings)
    dropped = []
    for folder in sorted(root.iterdir()):
        checkpoint = folder.name.removeprefix("ft-")
        if (
            folder.is_dir()
            and folder.name.startswith("ft-")
            and not store.exists(checkpoint_key(checkpoint))
        ):
            shutil.rmtree(folder, ignore_errors=True)
            dropped.append(checkpoint)
    return dropped


def drop_merged(settings: Settings, checkpoints: list[str]) -> list[dict[str, object]]:
    """Delete this host's merged-weights folders of ``checkpoints`` (those it has): one entry
    per folder deleted, with the sha256 of its weights and the time."""
    root = merged_root(settings)
    dropped: list[dict[str, object]] = []
    for checkpoint in checkpoints:
        folder = root / f"ft-{checkpoint}"  # models.finetune.merged_dir, without torch
        if not folder.exists():
            continue
        weights = hashlib.sha256()
        for path in sorted(folder.glob("*.safetensors")):
            weights.update(path.read_bytes())
        shutil.rmtree(folder)
        dropped.append(
            {
                "type": "merged_weights",
                "checkpoint": checkpoint,
                "key": folder.name,
                "sha256": weights.hexdigest(),
                "deleted": not folder.exists(),
                "destroyed_at": datetime.now(UTC).isoformat(),
            }
        )
    return dropped
