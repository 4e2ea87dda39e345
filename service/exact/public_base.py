"""The public base a model may name: a frozen TorchScript feature extractor, identified by its
content hash, that holds no subject data (models.sisa.public_base). Loaded and checked here;
its features are what the shard heads train and predict on."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.sisa import PublicBase
from service.core.errors import invalid
from service.registry.config import PublicBaseSettings

_LOCK = threading.Lock()
_CACHE: dict[tuple[str, str, int, int, int], PublicBase] = {}


def load_public_base(settings: PublicBaseSettings, input_dim: int) -> PublicBase:
    """The base, checked against the content hash the model names (cached per process)."""
    path = Path(settings.path)
    if not path.is_file():
        raise invalid("public_base_not_found", "the public base file does not exist")
    stat = path.stat()
    # A rewritten file is read and hashed again: the cache never hides a changed base.
    key = (settings.path, settings.content_hash, input_dim, stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    try:
        network = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        base = PublicBase(
            network, input_dim=input_dim, name=settings.name, provenance=settings.provenance
        )
    except (RuntimeError, ValueError) as exc:
        raise invalid("invalid_public_base", "the public base cannot be loaded") from exc
    if base.content_hash != settings.content_hash:
        raise invalid(
            "public_base_mismatch", "the public base's content hash is not the one configured"
        )
    with _LOCK:
        _CACHE[key] = base
    return base


def base_features(base: PublicBase | None, x: np.ndarray) -> np.ndarray:
    return x if base is None else base.features(x)


def attestation(settings: PublicBaseSettings | None) -> dict[str, Any] | None:
    """What the certificate records about the base (None: the model has none)."""
    if settings is None:
        return None
    return {
        "name": settings.name,
        "content_hash": settings.content_hash,
        "provenance": settings.provenance,
        "holds_subject_data": False,
        "frozen": True,
        "attestation": "the registering engineer attests that the base was trained on no data "
        "subject's records; erasure never touches it",
    }
