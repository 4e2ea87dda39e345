"""Slice-by-slice training of one shard, resuming from the longest cached checkpoint prefix."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from models.artifacts import ArtifactNotFound, ArtifactStore
from models.sisa.checkpoints import (
    Checkpoint,
    checkpoint_ids,
    load_checkpoint,
    runtime_tag,
    save_checkpoint,
)
from models.sisa.config import SisaConfig
from models.sisa.determinism import deterministic_torch, seeded_generator
from models.sisa.network import build_network
from models.sisa.records import ShardLayout, TrainingRecord

__all__ = [
    "ShardTrainingResult",
    "TrainedShard",
    "build_optimizer",
    "fit_epochs",
    "train_shard",
    "train_shard_in_memory",
]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ShardTrainingResult:
    shard: int
    checkpoint_ids: list[str]
    """Index r: the checkpoint after slice r."""
    final_checkpoint: str
    resumed_from_slice: int
    """First slice actually trained; equals the slice count when every checkpoint was cached."""
    slices_trained: int
    seconds: float
    lineage_hash: str
    num_records: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainedShard:
    """A finished shard training with its final model and optimizer still in memory."""

    result: ShardTrainingResult
    model: nn.Module
    optimizer: torch.optim.Optimizer


def build_optimizer(config: SisaConfig, model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate)


def fit_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed_parts: tuple[int | str, ...],
) -> None:
    """Mini-batch cross-entropy training; epoch ``e`` shuffles with a generator seeded by
    ``(*seed_parts, e)`` alone, so the data order never depends on what ran before."""
    n = len(y)
    if n == 0:
        return
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=seeded_generator("shuffle", *seed_parts, epoch))
        xs, ys = x[order], y[order]
        for start in range(0, n, batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = functional.cross_entropy(
                model(xs[start : start + batch_size]), ys[start : start + batch_size]
            )
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()


def _checkpoint_meta(
    config: SisaConfig, shard: int, slice_index: int, layout: ShardLayout
) -> dict[str, Any]:
    return {
        "config_fingerprint": config.fingerprint(),
        "shard": shard,
        "slice": slice_index,
        "num_records": layout.ends[slice_index],
        "content_digest": layout.content_digests[slice_index],
        "runtime": runtime_tag(),
    }


def _latest_usable_checkpoint(
    config: SisaConfig,
    shard: int,
    layout: ShardLayout,
    ids: Sequence[str],
    store: ArtifactStore,
) -> tuple[int, Checkpoint | None]:
    """The last slice whose checkpoint exists and was made from these very records on this
    runtime; returns (first slice still to train, that checkpoint)."""
    for slice_index in range(len(ids) - 1, -1, -1):
        try:
            checkpoint = load_checkpoint(store, ids[slice_index])
        except ArtifactNotFound:
            continue
        if dict(checkpoint.meta) == _checkpoint_meta(config, shard, slice_index, layout):
            return slice_index + 1, checkpoint
    return 0, None


def _train(
    config: SisaConfig,
    shard: int,
    records: Sequence[TrainingRecord],
    store: ArtifactStore | None,
    *,
    use_cache: bool,
    progress: Progress | None,
) -> TrainedShard:
    started = time.perf_counter()
    if not 0 <= shard < config.shards:
        raise ValueError(f"shard {shard} out of range for {config.shards} shards")
    layout = ShardLayout.build(config, records)
    ids = checkpoint_ids(config, shard, layout.keys_by_slice)
    with deterministic_torch(), torch.enable_grad():
        model = build_network(config, shard)
        optimizer = build_optimizer(config, model)
        first_slice, cached = 0, None
        if use_cache and store is not None:
            first_slice, cached = _latest_usable_checkpoint(config, shard, layout, ids, store)
        if cached is not None:
            model.load_state_dict(cached.model_state)
            optimizer.load_state_dict(dict(cached.optimizer_state))
        if progress is not None:
            progress(first_slice, config.slices)
        x = torch.from_numpy(layout.x)
        y = torch.from_numpy(layout.y)
        for slice_index in range(first_slice, config.slices):
            end = layout.ends[slice_index]
            fit_epochs(
                model,
                optimizer,
                x[:end],
                y[:end],
                epochs=config.slice_epochs,
                batch_size=config.batch_size,
                seed_parts=(config.seed, shard, slice_index),
            )
            if store is not None:
                checkpoint = Checkpoint(
                    model.state_dict(),
                    optimizer.state_dict(),
                    _checkpoint_meta(config, shard, slice_index, layout),
                )
                save_checkpoint(store, ids[slice_index], checkpoint)
            if progress is not None:
                progress(slice_index + 1, config.slices)
    result = ShardTrainingResult(
        shard=shard,
        checkpoint_ids=ids,
        final_checkpoint=ids[-1],
        resumed_from_slice=first_slice,
        slices_trained=config.slices - first_slice,
        seconds=time.perf_counter() - started,
        lineage_hash=layout.lineage_hash(),
        num_records=layout.num_records,
    )
    return TrainedShard(result, model, optimizer)


def train_shard(
    config: SisaConfig,
    shard: int,
    records: Sequence[TrainingRecord],
    store: ArtifactStore,
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> ShardTrainingResult:
    """Train ``shard`` on ``records`` and store a checkpoint after every slice.

    With ``use_cache`` training resumes after the last slice whose checkpoint is already stored
    for exactly these records. Erasing records therefore retrains only from the first slice that
    held one of them: every earlier checkpoint has the same content address as before.
    Without ``use_cache`` every slice is trained from scratch (and its checkpoint rewritten).
    Slices without records still get a checkpoint, so indices always run ``0..slices-1``.
    ``progress(done, total)`` is called with slices done so far.
    """
    return _train(config, shard, records, store, use_cache=use_cache, progress=progress).result


def train_shard_in_memory(
    config: SisaConfig,
    shard: int,
    records: Sequence[TrainingRecord],
    *,
    progress: Progress | None = None,
) -> TrainedShard:
    """Train ``shard`` from scratch without reading or writing any store."""
    return _train(config, shard, records, None, use_cache=False, progress=progress)
