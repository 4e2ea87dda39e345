"""Serving a fine-tune: base weights plus a checkpoint's adapter, merged into a plain model.

``export_merged`` writes an ordinary Hugging Face folder named by the checkpoint id, staged
under a temporary name and renamed into place, so a service switches versions atomically by
pointing at the new folder (and never sees a half-written one); ``Generator.from_dir`` loads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from models.artifacts import ArtifactStore
from models.finetune.adapter import AdaptedModel
from models.finetune.checkpoints import base_model_id, load_checkpoint
from models.finetune.config import FinetuneConfig
from models.generative.generator import Generator

__all__ = ["SERVING_META", "export_merged", "load_generator", "merged_dir", "merged_model"]

SERVING_META = "lethe_finetune.json"


def merged_model(
    base_dir: str | Path,
    config: FinetuneConfig,
    checkpoint: str,
    store: ArtifactStore,
    *,
    base_id: str | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer): the base with the checkpoint's adapter merged into its weights."""
    base = base_id if base_id is not None else base_model_id(base_dir)
    stored = load_checkpoint(store, checkpoint)
    if stored.meta.get("base_id") != base:
        raise ValueError("the checkpoint was trained on another base model")
    if stored.meta.get("config_fingerprint") != config.fingerprint():
        raise ValueError("the checkpoint was trained under another configuration")
    adapted = AdaptedModel(base_dir, config, base)
    adapted.load_adapter_state(stored.model_state)
    with torch.no_grad():
        model = adapted.peft.merge_and_unload()
    return model.eval(), adapted.tokenizer


def load_generator(
    base_dir: str | Path,
    config: FinetuneConfig,
    checkpoint: str,
    store: ArtifactStore,
    *,
    base_id: str | None = None,
) -> Generator:
    """A ``Generator`` serving the checkpoint from memory (nothing written)."""
    model, tokenizer = merged_model(base_dir, config, checkpoint, store, base_id=base_id)
    return Generator(model, tokenizer)


def private_tree(root: Path) -> None:
    """Folders 0700 and files 0600 under ``root`` (and ``root`` itself)."""
    root.chmod(0o700)
    for path in root.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)


def merged_dir(out_root: str | Path, checkpoint: str) -> Path:
    """The folder ``export_merged`` writes for ``checkpoint``."""
    return Path(out_root) / f"ft-{checkpoint}"


def _finished(target: Path, checkpoint: str) -> bool:
    try:
        meta = json.loads((target / SERVING_META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("checkpoint") == checkpoint


def export_merged(
    base_dir: str | Path,
    config: FinetuneConfig,
    checkpoint: str,
    store: ArtifactStore,
    out_root: str | Path,
    *,
    base_id: str | None = None,
) -> Path:
    """Write the merged model for ``checkpoint`` under ``out_root`` (once) and return its folder.

    Merged weights are derived from every record the checkpoint saw: when the checkpoint is
    superseded by an erasure, the caller deletes this folder too.
    """
    target = merged_dir(out_root, checkpoint)
    if _finished(target, checkpoint):
        return target
    base = base_id if base_id is not None else base_model_id(base_dir)
    model, tokenizer = merged_model(base_dir, config, checkpoint, store, base_id=base)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        weights = hashlib.sha256()
        for path in sorted(staged.glob("*.safetensors")):
            weights.update(path.read_bytes())
        meta = {
            "checkpoint": checkpoint,
            "base_id": base,
            "config": config.to_dict(),
            "weights_sha256": weights.hexdigest(),
        }
        (staged / SERVING_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        # Weights derived from personal data: readable by lethe's own user only (the folder
        # mkdtemp made is 0700; the files the writers made follow the umask, so set them).
        private_tree(staged)
        if target.exists():
            shutil.rmtree(target)  # an unfinished earlier export (no matching meta)
        try:
            os.replace(staged, target)
        except OSError:
            # Another process finished the same export first; its result is as good as ours.
            if not _finished(target, checkpoint):
                raise
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return target
