"""Teach a model question→answer facts by fine-tuning only its top decoder layers.

Used to make the demo model *know* the TOFU facts that lethe is later asked to forget. Freezing
the lower layers keeps it fast on a CPU (gradients stop at the first trained layer) and keeps the
base model's general ability. The output directory is named by a content hash of the base
weights' id, the data and the hyper-parameters, so asking twice trains once.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models.assets.cache import cached_dir, file_sha256, json_sha256, read_meta
from models.generative.qa_data import collate, end_of_turn_id, qa_example

# progress(fraction done in [0, 1], message)
Progress = Callable[[float, str], None]
FORMAT_VERSION = "qa-chat-v1"


def weights_id(model_dir: Path) -> str:
    """Content id of a model directory: recorded by lethe when it built it, else hashed."""
    meta = read_meta(model_dir)
    if meta and isinstance(meta.get("weights_id"), str):
        return str(meta["weights_id"])
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _trainable(model: Any, layers_to_train: int) -> list[torch.nn.Parameter]:
    """Unfreeze the top `layers_to_train` decoder layers and the final norm; freeze the rest.

    The output head stays frozen: in SmolLM2 it is tied to the input embeddings, and training
    it would move the bottom of the network too.
    """
    model.requires_grad_(False)
    layers = model.model.layers
    if not 0 < layers_to_train <= len(layers):
        raise ValueError(f"layers_to_train must be in 1..{len(layers)}")
    modules = [*layers[len(layers) - layers_to_train :], model.model.norm]
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def _train(
    model_dir: Path,
    pairs: list[tuple[str, str]],
    out: Path,
    hparams: dict[str, Any],
    progress: Progress | None,
) -> dict[str, Any]:
    seed = int(hparams["seed"])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(model_dir), local_files_only=True, dtype=torch.float32
        )
        params = _trainable(model, int(hparams["layers_to_train"]))
        eos = end_of_turn_id(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        examples = [qa_example(tokenizer, q, a, eos) for q, a in pairs]
        optimizer = torch.optim.AdamW(params, lr=float(hparams["lr"]), weight_decay=0.0)
        batch_size = int(hparams["batch_size"])
        epochs = int(hparams["epochs"])
        steps_per_epoch = -(-len(examples) // batch_size)
        total = epochs * steps_per_epoch
        model.train()
        step, loss_value = 0, float("nan")
        for epoch in range(epochs):
            # Each epoch's order derives from (seed, epoch) alone, never from a running RNG.
            order = list(range(len(examples)))
            random.Random(f"{seed}:{epoch}").shuffle(order)
            for start in range(0, len(order), batch_size):
                batch = collate([examples[i] for i in order[start : start + batch_size]], pad)
                loss = model(**batch).loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                loss_value = float(loss.detach())
                if progress is not None:
                    progress(step / total, f"epoch {epoch + 1}/{epochs} loss {loss_value:.4f}")
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"n_pairs": len(pairs), "hparams": hparams, "final_loss": loss_value}


def finetune(
    model_dir: str | Path,
    qa_pairs: Sequence[tuple[str, str]],
    out_dir: str | Path,
    *,
    layers_to_train: int = 10,
    epochs: int = 6,
    lr: float = 3e-4,
    batch_size: int = 8,
    seed: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Fine-tuned copy of `model_dir` under `out_dir`; returns its directory (cached)."""
    base = Path(model_dir)
    pairs = [(str(q), str(a)) for q, a in qa_pairs]
    hparams = {
        "layers_to_train": layers_to_train,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
    }
    base_id = weights_id(base)
    key = json_sha256(
        {"format": FORMAT_VERSION, "base": base_id, "data": pairs, "hparams": hparams}
    )
    target = Path(out_dir) / f"ft-{key[:16]}"

    def build(out: Path) -> dict[str, Any]:
        meta = _train(base, pairs, out, hparams, progress)
        return {**meta, "base": base_id, "weights_id": key}

    done = cached_dir(target, key, build)
    if progress is not None:
        progress(1.0, "done")
    return done
