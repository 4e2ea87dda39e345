"""Slice-by-slice fine-tuning, resuming from the longest stored checkpoint prefix."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.artifacts import ArtifactStore
from models.finetune.adapter import AdaptedModel, PrefixCache
from models.finetune.checkpoints import (
    base_model_id,
    checkpoint_ids,
    checkpoint_key,
    initial_checkpoint_id,
    load_checkpoint,
    runtime_tag,
    save_checkpoint,
)
from models.finetune.config import FinetuneConfig
from models.finetune.records import FinetuneRecord, SliceLayout
from models.slicing.checkpoints import Checkpoint, latest_matching
from models.slicing.determinism import deterministic_torch, seeded_generator

__all__ = [
    "FinetuneResult",
    "TrainedAdapter",
    "ensure_initial_checkpoint",
    "train_sliced",
    "train_sliced_in_memory",
]

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


@dataclass(frozen=True)
class _Step:
    """What slice ``slice_index`` trains: its tensors, its optimizer, the first layer its
    forward runs, and the adapter state under that layer (layered fine-tunes)."""

    slice_index: int
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    start: int
    below: str


def _fit_prefix(
    model: AdaptedModel, layout: SliceLayout, step: _Step, cache: PrefixCache
) -> tuple[int, float]:
    """``slice_epochs`` epochs over the records of slices 0..slice_index; returns the steps
    taken and the seconds spent computing prefix activations.

    Epoch e shuffles with a generator seeded by (seed, slice, e) alone, so a run resumed after
    slice r - 1 makes exactly the draws a run from scratch makes at slice r.
    """
    config = model.config
    end = layout.ends[step.slice_index]
    started = time.perf_counter()
    hiddens = [
        model.prefix_hidden(ids, cache, start=step.start, below=step.below)
        for ids, _ in layout.examples[:end]
    ]
    prefix_seconds = time.perf_counter() - started
    optimizer = step.optimizer
    steps = 0
    for epoch in range(config.slice_epochs if end else 0):
        order = torch.randperm(
            end, generator=seeded_generator("shuffle", config.seed, step.slice_index, epoch)
        ).tolist()
        for first in range(0, end, config.batch_size):
            chosen = order[first : first + config.batch_size]
            loss = model.loss(
                [layout.examples[i] for i in chosen], [hiddens[i] for i in chosen], step.start
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(step.params, config.max_grad_norm)
            optimizer.step()
            steps += 1
    return steps, prefix_seconds


def _step(start: _Start, slice_index: int) -> _Step:
    """Cumulative fine-tunes train every adapter with one optimizer throughout; layered ones
    train slice r's adapter alone, with a fresh optimizer, on the frozen groups below it."""
    model = start.model
    if not model.config.layered:
        params = list(model.trainable.values())
        return _Step(slice_index, params, start.optimizer, model.split, "")
    params = model.train_slice(slice_index)
    optimizer = torch.optim.AdamW(params, lr=model.config.learning_rate, weight_decay=0.0)
    below = start.ids[slice_index - 1] if slice_index else ""
    return _Step(slice_index, params, optimizer, model.group_start(slice_index), below)


@dataclass(frozen=True)
class _Start:
    """A fine-tune ready for its first slice still to train."""

    model: AdaptedModel
    optimizer: torch.optim.Optimizer
    layout: SliceLayout
    ids: list[str]
    first_slice: int
    initial_state: Mapping[str, torch.Tensor]
    """The adapters before any slice was trained (kept for layered fine-tunes only)."""


@dataclass(frozen=True)
class _Work:
    steps: int
    prefix_seconds: float
    checkpoint_bytes: dict[str, int]
    optimizer: torch.optim.Optimizer
    """The last slice's optimizer (layered fine-tunes have one per slice)."""


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
    initial = model.adapter_state() if config.layered else {}
    first_slice, cached = 0, None
    if cache_store is not None:
        first_slice, cached = _latest_usable(config, base, layout, ids, cache_store)
    # Layered: each slice trains with an optimizer of its own; this one is the last slice's,
    # and is what a run that finds every checkpoint stored returns.
    params = (
        model.train_slice(config.slices - 1) if config.layered else list(model.trainable.values())
    )
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    if cached is not None:
        model.load_adapter_state(cached.model_state)
        if not config.layered or first_slice == config.slices:
            optimizer.load_state_dict(dict(cached.optimizer_state))
    return _Start(model, optimizer, layout, ids, first_slice, initial)


def _fit_slices(
    config: FinetuneConfig,
    base: str,
    start: _Start,
    cache: PrefixCache,
    store: ArtifactStore | None,
    progress: Progress | None,
    upto: int,
) -> _Work:
    """Train every slice from ``start.first_slice`` to ``upto`` (exclusive), storing a
    checkpoint after each."""
    written: dict[str, int] = {}
    steps, prefix_seconds = 0, 0.0
    optimizer = start.optimizer
    if progress is not None:
        progress(start.first_slice, upto)
    for slice_index in range(start.first_slice, upto):
        step = _step(start, slice_index)
        optimizer = step.optimizer
        slice_steps, slice_prefix_seconds = _fit_prefix(start.model, start.layout, step, cache)
        steps += slice_steps
        prefix_seconds += slice_prefix_seconds
        if store is not None:
            checkpoint = Checkpoint(
                start.model.adapter_state(),
                optimizer.state_dict(),
                _meta(config, base, slice_index, start.layout),
            )
            written[start.ids[slice_index]] = save_checkpoint(
                store, start.ids[slice_index], checkpoint
            )
        if progress is not None:
            progress(slice_index + 1, upto)
    return _Work(steps, prefix_seconds, written, optimizer)


def _store_initial(
    config: FinetuneConfig,
    base: str,
    state: Mapping[str, torch.Tensor],
    store: ArtifactStore,
) -> None:
    """Store the adapters before any slice (at their zero-effect start), the state served when
    an erasure switches off every slice. A function of the base and the config alone, so it is
    written once."""
    checkpoint = initial_checkpoint_id(base, config)
    if store.exists(checkpoint_key(checkpoint)):
        return
    meta = {
        "config_fingerprint": config.fingerprint(),
        "base_id": base,
        "slice": -1,
        "num_records": 0,
        "content_digest": "",
        "runtime": runtime_tag(config.num_threads),
    }
    save_checkpoint(store, checkpoint, Checkpoint(dict(state), {}, meta))


def ensure_initial_checkpoint(
    base_dir: str | Path, config: FinetuneConfig, store: ArtifactStore, base_id: str
) -> str:
    """The initial checkpoint's id, stored first if it is not (fine-tunes trained before it
    existed, or cumulative ones): freshly seeded adapters are the same draws every time."""
    checkpoint = initial_checkpoint_id(base_id, config)
    if not store.exists(checkpoint_key(checkpoint)):
        with deterministic_torch(config.num_threads):
            state = AdaptedModel(base_dir, config, base_id).adapter_state()
        _store_initial(config, base_id, state, store)
    return checkpoint


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
    upto: int | None = None,
) -> TrainedAdapter:
    started, cpu_started = time.perf_counter(), time.process_time()
    base = base_id if base_id is not None else base_model_id(base_dir)
    cache = prefix_cache if prefix_cache is not None else PrefixCache()
    last = config.slices if upto is None else upto
    if not 0 <= last <= config.slices:
        raise ValueError(f"upto must be between 0 and {config.slices}")
    with deterministic_torch(config.num_threads), torch.enable_grad():
        start = _start(base_dir, config, records, base, store if use_cache else None)
        if config.layered and store is not None:
            _store_initial(config, base, start.initial_state, store)
        if start.first_slice < last and start.layout.examples:
            start.model.self_check(start.layout.examples[0], cache)
        work = _fit_slices(config, base, start, cache, store, progress, last)
    result = FinetuneResult(
        base_id=base,
        checkpoint_ids=start.ids,
        final_checkpoint=start.ids[last - 1] if last else initial_checkpoint_id(base, config),
        resumed_from_slice=start.first_slice,
        slices_trained=max(0, last - start.first_slice),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        lineage_hash=start.layout.lineage_hash(),
        num_records=start.layout.num_records,
        records_per_slice=[len(keys) for keys in start.layout.keys_by_slice],
        checkpoint_bytes=work.checkpoint_bytes,
        optimizer_steps=work.steps,
        prefix_seconds=work.prefix_seconds,
    )
    return TrainedAdapter(result, start.model, work.optimizer)


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
    upto: int | None = None,
) -> TrainedAdapter:
    """Fine-tune from scratch without reading or writing any store; ``upto`` stops after that
    many slices (a layered fine-tune's model trained without the slices from ``upto`` on)."""
    return _train(
        base_dir,
        config,
        records,
        None,
        base_id=base_id,
        use_cache=False,
        prefix_cache=prefix_cache,
        progress=progress,
        upto=upto,
    )
