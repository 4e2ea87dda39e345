"""Slice-by-slice training of one shard, resuming from the longest cached checkpoint prefix."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.artifacts import ArtifactStore
from models.sisa.checkpoints import (
    checkpoint_ids,
    load_checkpoint,
    runtime_tag,
    save_checkpoint,
)
from models.sisa.config import SisaConfig
from models.sisa.fitting import (
    build_optimizer,
    fit_epochs,
    fit_with_early_stopping,
)
from models.sisa.network import build_network
from models.sisa.records import ShardLayout, TrainingRecord
from models.slicing.checkpoints import Checkpoint, latest_matching
from models.slicing.determinism import deterministic_torch

__all__ = [
    "MIN_VALIDATION_RECORDS",
    "ShardTrainingResult",
    "TrainedShard",
    "build_optimizer",
    "fit_epochs",
    "train_shard",
    "train_shard_in_memory",
]

Progress = Callable[[int, int], None]

# Below this many validation records a shard's accuracy is too noisy to say it learned anything.
MIN_VALIDATION_RECORDS = 10


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
    epochs_by_slice: list[int] = field(default_factory=list)
    """Epochs run after adding slice r (cached slices included; -1 where a v1 checkpoint did
    not record it)."""
    work_by_slice: list[int] = field(default_factory=list)
    """Training-record passes (epochs x records trained on) spent on slice r: the cost model
    for how much of a shard a retrain from slice r redoes."""
    validation_records: int = 0
    validation_accuracy: float | None = None
    """Accuracy of the final model on the shard's own validation records."""
    majority_accuracy: float | None = None
    """Accuracy on those records of always answering the shard's most common training label."""
    too_small: str | None = None
    """Why this shard cannot be shown to have learned anything (None: it did)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainedShard:
    """A finished shard training with its final model and optimizer still in memory."""

    result: ShardTrainingResult
    model: nn.Module
    optimizer: torch.optim.Optimizer


def _checkpoint_meta(
    config: SisaConfig, shard: int, slice_index: int, layout: ShardLayout
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed from (its ``outcome`` is not compared)."""
    return {
        "config_fingerprint": config.fingerprint(),
        "shard": shard,
        "slice": slice_index,
        "num_records": layout.ends[slice_index],
        "content_digest": layout.content_digests[slice_index],
        "runtime": runtime_tag(config),
    }


def _identity(meta: Any) -> dict[str, Any]:
    return {key: value for key, value in dict(meta).items() if key != "outcome"}


def _latest_usable_checkpoint(
    config: SisaConfig,
    shard: int,
    layout: ShardLayout,
    ids: Sequence[str],
    store: ArtifactStore,
) -> tuple[int, Checkpoint | None]:
    """The last slice whose checkpoint exists and was made from these very records on this
    runtime; returns (first slice still to train, that checkpoint)."""
    return latest_matching(
        ids,
        lambda checkpoint_id: load_checkpoint(store, checkpoint_id),
        lambda index, checkpoint: (
            _identity(checkpoint.meta) == _checkpoint_meta(config, shard, index, layout)
        ),
    )


def _cached_slices(config: SisaConfig, checkpoint: Checkpoint | None) -> list[dict[str, Any]]:
    if checkpoint is None:
        return []
    outcome = checkpoint.meta.get("outcome")
    if isinstance(outcome, dict) and "slices" in outcome:
        return [dict(entry) for entry in outcome["slices"]]
    # A v1 checkpoint (fixed schedule) recorded no outcome.
    count = int(checkpoint.meta["slice"]) + 1
    return [{"epochs": -1, "work": -1, "validation_accuracy": None}] * count


@dataclass(frozen=True)
class _SliceFit:
    """Fits ``model`` after one slice is added; ``seed_parts`` seed its shuffles."""

    config: SisaConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    seed_parts: tuple[int | str, ...]

    def fixed_epochs(self, x: torch.Tensor, y: torch.Tensor) -> None:
        fit_epochs(
            self.model,
            self.optimizer,
            x,
            y,
            epochs=self.config.slice_epochs,
            batch_size=self.config.batch_size,
            seed_parts=self.seed_parts,
        )

    def early_stopping(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        validation_x: torch.Tensor,
        validation_y: torch.Tensor,
    ) -> dict[str, Any]:
        outcome = fit_with_early_stopping(
            self.model,
            self.optimizer,
            train_x,
            train_y,
            validation_x,
            validation_y,
            max_rounds=self.config.max_rounds,
            patience=self.config.patience,
            batch_size=self.config.batch_size,
            seed_parts=self.seed_parts,
        )
        return {
            "epochs": outcome.epochs_run,
            "best_epoch": outcome.best_epoch,
            "work": outcome.epochs_run * len(train_y),
            "validation_loss": outcome.validation_loss,
            "validation_accuracy": outcome.validation_accuracy,
        }


def _train_slice(
    config: SisaConfig,
    shard: int,
    slice_index: int,
    layout: ShardLayout,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """Train on slices ``0..slice_index``; returns what happened, for the checkpoint's meta."""
    end = layout.ends[slice_index]
    x, y = torch.from_numpy(layout.x[:end]), torch.from_numpy(layout.y[:end])
    held_out = torch.from_numpy(layout.validation[:end])
    fit = _SliceFit(config, model, optimizer, (config.seed, shard, slice_index))
    if not config.early_stopping:
        fit.fixed_epochs(x, y)
        return {"epochs": config.slice_epochs, "work": config.slice_epochs * end}
    train_x, train_y = x[~held_out], y[~held_out]
    validation_x, validation_y = x[held_out], y[held_out]
    if end == layout.start(slice_index) and previous is not None:
        # The slice added no records: the data, hence the result, are those of the slice before.
        return {**previous, "epochs": 0, "best_epoch": 0, "work": 0}
    if len(validation_y) == 0:
        # Nothing to stop on yet (a tiny prefix): the fixed schedule's epochs.
        fit.fixed_epochs(train_x, train_y)
        epochs = config.slice_epochs if len(train_y) else 0
        return {"epochs": epochs, "work": epochs * len(train_y), "validation_accuracy": None}
    return fit.early_stopping(train_x, train_y, validation_x, validation_y)


def _diagnosis(
    config: SisaConfig, layout: ShardLayout, validation_accuracy: float | None
) -> tuple[int, float | None, str | None]:
    """(validation records, majority-class accuracy on them, why the shard is too small)."""
    held_out = layout.validation
    train_y, validation_y = layout.y[~held_out], layout.y[held_out]
    if len(train_y) == 0:
        return len(validation_y), None, "no training records"
    if not config.early_stopping:
        return 0, None, None
    majority = None
    if len(validation_y):
        majority_label = int(np.bincount(train_y, minlength=config.num_classes).argmax())
        majority = float((validation_y == majority_label).mean())
    if len(validation_y) < MIN_VALIDATION_RECORDS:
        return (
            len(validation_y),
            majority,
            f"only {len(validation_y)} validation records (fewer than "
            f"{MIN_VALIDATION_RECORDS}): too few to tell whether the shard learned; "
            "use fewer shards",
        )
    assert majority is not None
    if validation_accuracy is not None and validation_accuracy <= majority:
        return (
            len(validation_y),
            majority,
            f"validation accuracy {validation_accuracy:.3f} is not above the majority-class "
            f"rate {majority:.3f}: the shard learned nothing; use fewer shards or more data",
        )
    return len(validation_y), majority, None


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
        slices = _cached_slices(config, cached)
        if progress is not None:
            progress(first_slice, config.slices)
        for slice_index in range(first_slice, config.slices):
            previous = slices[-1] if slices else None
            slices.append(
                _train_slice(config, shard, slice_index, layout, model, optimizer, previous)
            )
            if store is not None:
                meta = _checkpoint_meta(config, shard, slice_index, layout)
                meta["outcome"] = {"slices": list(slices)}
                checkpoint = Checkpoint(model.state_dict(), optimizer.state_dict(), meta)
                save_checkpoint(store, ids[slice_index], checkpoint)
            if progress is not None:
                progress(slice_index + 1, config.slices)
    validation_accuracy = slices[-1].get("validation_accuracy") if slices else None
    validation_records, majority, too_small = _diagnosis(config, layout, validation_accuracy)
    result = ShardTrainingResult(
        shard=shard,
        checkpoint_ids=ids,
        final_checkpoint=ids[-1],
        resumed_from_slice=first_slice,
        slices_trained=config.slices - first_slice,
        seconds=time.perf_counter() - started,
        lineage_hash=layout.lineage_hash(),
        num_records=layout.num_records,
        epochs_by_slice=[int(entry["epochs"]) for entry in slices],
        work_by_slice=[int(entry["work"]) for entry in slices],
        validation_records=validation_records,
        validation_accuracy=validation_accuracy,
        majority_accuracy=majority,
        too_small=too_small,
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
