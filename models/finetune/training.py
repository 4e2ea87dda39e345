"""Slice-by-slice fine-tuning, resuming from the longest stored checkpoint prefix."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.artifacts import ArtifactStore
from models.finetune.adapter import AdaptedModel, PrefixCache
from models.finetune.checkpoints import (
    base_model_id,
    checkpoint_ids,
    load_checkpoint,
    runtime_tag,
    save_checkpoint,
)
from models.finetune.config import FinetuneConfig
from models.finetune.records import FinetuneRecord, SliceLayout
from models.sisa.checkpoints import Checkpoint, latest_matching
from models.sisa.determinism import deterministic_torch, seeded_generator

__all__ = ["FinetuneResult", "TrainedAdapter", "train_sliced", "train_sliced_in_memory"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FinetuneResult:
    base_id: str
    checkpoint_ids: list[str]
    """Index r: the checkpoint after slice r; the last one is what serving loads."""
    final_checkpoint: str
    resumed_from_slice: int
    """First slice actually trained; equals the slice count when every checkpoint was stored."""
    slices_trained: int
    seconds: float
    cpu_seconds: float
    """CPU time of this process during the run: on a shared machine a steadier measure of the
    work done than wall time (training runs on ``num_threads`` threads)."""
    lineage_hash: str
    num_records: int
    records_per_slice: list[int]
    checkpoint_bytes: dict[str, int]
    """Size of every checkpoint this run wrote."""
    optimizer_steps: int
    prefix_seconds: float
    """Time spent computing frozen-prefix activations (once per record and run); the rest of
    ``seconds`` is model loading, tokenizing, the self-check and the optimizer steps."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainedAdapter:
    """A finished fine-tune with its model and optimizer still in memory."""

    result: FinetuneResult
    model: AdaptedModel
    optimizer: torch.optim.Optimizer


def _meta(config: FinetuneConfig, base_id: str, slice_index: int, layout: SliceLayout) -> Any:
    return {
        "config_fingerprint": config.fingerprint(),
        "base_id": base_id,
        "slice": slice_index,
        "num_records": layout.ends[slice_index],
        "content_digest": layout.content_digests[slice_index],
        "runtime": runtime_tag(config.num_threads),
    }


def _latest_usable(
    config: FinetuneConfig,
    base_id: str,
    layout: SliceLayout,
    ids: Sequence[str],
    store: ArtifactStore,
) -> tuple[int, Checkpoint | None]:
    """The last slice whose checkpoint exists and was made from these very tokens on this
    runtime; returns (first slice still to train, that checkpoint)."""
    return latest_matching(
        ids,
        lambda checkpoint_id: load_checkpoint(store, checkpoint_id),
        lambda index, checkpoint: dict(checkpoint.meta) == _meta(config, base_id, index, layout),
    )


def _fit_prefix(
    model: AdaptedModel,
    optimizer: torch.optim.Optimizer,
    layout: SliceLayout,
    slice_index: int,
    cache: PrefixCache,
) -> tuple[int, float]:
    """``slice_epochs`` epochs over the records of slices 0..slice_index; returns the steps
    taken and the seconds spent computing prefix activations.

    Epoch e shuffles with a generator seeded by (seed, slice, e) alone, so a run resumed after
    slice r - 1 makes exactly the draws a run from scratch makes at slice r.
    """
    config = model.config
    end = layout.ends[slice_index]
    started = time.perf_counter()
    hiddens = [model.prefix_hidden(ids, cache) for ids, _ in layout.examples[:end]]
    prefix_seconds = time.perf_counter() - started
    params = list(model.trainable.values())
    steps = 0
    for epoch in range(config.slice_epochs if end else 0):
        order = torch.randperm(
            end, generator=seeded_generator("shuffle", config.seed, slice_index, epoch)
        ).tolist()
        for start in range(0, end, config.batch_size):
            chosen = order[start : start + config.batch_size]
            loss = model.loss([layout.examples[i] for i in chosen], [hiddens[i] for i in chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            steps += 1
    return steps, prefix_seconds


@dataclass(frozen=True)
class _Start:
    """A fine-tune ready for its first slice still to train."""

    model: AdaptedModel
    optimizer: torch.optim.Optimizer
    layout: SliceLayout
    ids: list[str]
    first_slice: int


@dataclass(frozen=True)
class _Work:
    steps: int
    prefix_seconds: float
    checkpoint_bytes: dict[str, int]


def _start(
    base_dir: str | Path,
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    base: str,
    cache_store: ArtifactStore | None,
) -> _Start:
    """The model and optimizer, restored from the last usable checkpoint in ``cache_store``
    (None: from scratch)."""
    model = AdaptedModel(base_dir, config, base)
    layout = SliceLayout.build(config, records, model.tokenizer, model.eos_id)
    ids = checkpoint_ids(base, config, layout.keys_by_slice)
    optimizer = torch.optim.AdamW(
        list(model.trainable.values()), lr=config.learning_rate, weight_decay=0.0
    )
    first_slice, cached = 0, None
    if cache_store is not None:
        first_slice, cached = _latest_usable(config, base, layout, ids, cache_store)
    if cached is not None:
        model.load_adapter_state(cached.model_state)
        optimizer.load_state_dict(dict(cached.optimizer_state))
    return _Start(model, optimizer, layout, ids, first_slice)


def _fit_slices(
    config: FinetuneConfig,
    base: str,
    start: _Start,
    cache: PrefixCache,
    store: ArtifactStore | None,
    progress: Progress | None,
) -> _Work:
    """Train every slice from ``start.first_slice`` on, storing a checkpoint after each."""
    written: dict[str, int] = {}
    steps, prefix_seconds = 0, 0.0
    if progress is not None:
        progress(start.first_slice, config.slices)
    for slice_index in range(start.first_slice, config.slices):
        slice_steps, slice_prefix_seconds = _fit_prefix(
            start.model, start.optimizer, start.layout, slice_index, cache
        )
        steps += slice_steps
        prefix_seconds += slice_prefix_seconds
        if store is not None:
            checkpoint = Checkpoint(
                start.model.adapter_state(),
                start.optimizer.state_dict(),
                _meta(config, base, slice_index, start.layout),
            )
            written[start.ids[slice_index]] = save_checkpoint(
                store, start.ids[slice_index], checkpoint
            )
        if progress is not None:
            progress(slice_index + 1, config.slices)
    return _Work(steps, prefix_seconds, written)


def _train(
    base_dir: str | Path,
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    store: ArtifactStore | None,
    *,
    base_id: str | None,
    use_cache: bool,
    prefix_cache: PrefixCache | None,
    progress: Progress | None,
) -> TrainedAdapter:
    started, cpu_started = time.perf_counter(), time.process_time()
    base = base_id if base_id is not None else base_model_id(base_dir)
    cache = prefix_cache if prefix_cache is not None else PrefixCache()
    with deterministic_torch(config.num_threads), torch.enable_grad():
        start = _start(base_dir, config, records, base, store if use_cache else None)
        if start.first_slice < config.slices and start.layout.examples:
            start.model.self_check(start.layout.examples[0], cache)
        work = _fit_slices(config, base, start, cache, store, progress)
    result = FinetuneResult(
        base_id=base,
        checkpoint_ids=start.ids,
        final_checkpoint=start.ids[-1],
        resumed_from_slice=start.first_slice,
        slices_trained=config.slices - start.first_slice,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        lineage_hash=start.layout.lineage_hash(),
        num_records=start.layout.num_records,
        records_per_slice=[len(keys) for keys in start.layout.keys_by_slice],
        checkpoint_bytes=work.checkpoint_bytes,
        optimizer_steps=work.steps,
        prefix_seconds=work.prefix_seconds,
    )
    return TrainedAdapter(result, start.model, start.optimizer)


def train_sliced(
    base_dir: str | Path,
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    store: ArtifactStore,
    *,
    base_id: str | None = None,
    use_cache: bool = True,
    prefix_cache: PrefixCache | None = None,
    progress: Progress | None = None,
) -> FinetuneResult:
    """Fine-tune the model in ``base_dir`` on ``records``, storing a checkpoint (adapter and
    optimizer state) after every slice.

    With ``use_cache`` training resumes after the last slice whose checkpoint is already stored
    for exactly these records, so erasing a subject retrains only from its slice on, and a
    redelivered job finds the slices it already trained. Slices without records still get a
    checkpoint. ``base_id`` defaults to ``base_model_id(base_dir)`` (hashes the folder);
    ``progress(done, total)`` counts slices.
    """
    return _train(
        base_dir,
        config,
        records,
        store,
        base_id=base_id,
        use_cache=use_cache,
        prefix_cache=prefix_cache,
        progress=progress,
    ).result


def train_sliced_in_memory(
    base_dir: str | Path,
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    *,
    base_id: str | None = None,
    prefix_cache: PrefixCache | None = None,
    progress: Progress | None = None,
) -> TrainedAdapter:
    """Fine-tune from scratch without reading or writing any store."""
    return _train(
        base_dir,
        config,
        records,
        None,
        base_id=base_id,
        use_cache=False,
        prefix_cache=prefix_cache,
        progress=progress,
    )
