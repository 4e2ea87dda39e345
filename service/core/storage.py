"""Where lethe keeps bytes outside the database: the artifact store (checkpoints, manifests;
a local folder or an fsspec URL) and the host-local folder of merged fine-tuned weights.

Shared by every domain that trains, serves or destroys artifacts."""

from __future__ import annotations

from pathlib import Path

from models.artifacts import ArtifactStore, open_store
from service.core.config import Settings


def artifact_store(settings: Settings) -> ArtifactStore:
    return open_store(settings.artifact_location)


def merged_root(settings: Settings) -> Path:
    """Where merged serving folders live (derived weights: deleted with their checkpoint):
    beside the checkpoints when the artifact store is a local folder, else under data_dir."""
    location = settings.artifact_location
    if "://" not in location:
        return Path(location).resolve() / "serving"
    return Path(settings.data_dir).resolve() / "finetuned"
