"""Measurements of one SISA configuration on one dataset, for bench/sisa.py.

Each measurement writes into its own scratch layer over the trained base store, so no
measurement can reuse checkpoints another one wrote.
"""

from __future__ import annotations

import random
import shutil
import statistics
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.sisa_data import Dataset
from models.artifacts import ArtifactNotFound, ArtifactStore, LocalArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    PublicBase,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    train_shard,
    unlearn,
    verify_bit_exact,
)
from models.sisa.training import ShardTrainingResult

__all__ = ["Bench", "Clock", "ScratchLayer", "log", "measure_config", "subject_of"]

ShardRecords = dict[int, list[TrainingRecord]]

Clock = Callable[[], float]


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def subject_of(dataset: Dataset, row: int) -> str:
    """One subject per record in every benchmark dataset."""
    return f"{dataset.name}/subject-{row}"


class ScratchLayer:
    """An artifact store that writes to a scratch folder and reads through to a base store."""

    def __init__(self, base: ArtifactStore, root: Path) -> None:
        self.base = base
        self.top = LocalArtifactStore(root)

    def put(self, key: str, data: bytes) -> None:
        self.top.put(key, data)

    def get(self, key: str) -> bytes:
        try:
            return self.top.get(key)
        except ArtifactNotFound:
            return self.base.get(key)

    def exists(self, key: str) -> bool:
        return self.top.exists(key) or self.base.exists(key)

    def delete(self, key: str) -> bool:
        return self.top.delete(key)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(set(self.top.keys(prefix)) | set(self.base.keys(prefix)))


def place_records(
    dataset: Dataset, config: SisaConfig, features: np.ndarray
) -> tuple[ShardRecords, list[str]]:
    """One subject per record; returns the shards' records and every record key."""
    by_shard: ShardRecords = {s: [] for s in range(config.shards)}
    keys: list[str] = []
    for i in range(len(dataset.y)):
        key = str(i)
        shard = assign_shard(subject_of(dataset, i), config)
        by_shard[shard].append(
            TrainingRecord(key, assign_slice(key, config), features[i], int(dataset.y[i]))
        )
        keys.append(key)
    return by_shard, keys


def train_all(
    config: SisaConfig,
    records: Mapping[int, Sequence[TrainingRecord]],
    store: ArtifactStore,
    clock: Clock,
) -> tuple[Manifest, float, list[ShardTrainingResult]]:
    started = clock()
    results = [
        train_shard(config, s, records[s], store, use_cache=False) for s in range(config.shards)
    ]
    return Manifest.from_results(results), clock() - started, results


class Bench:
    def __init__(
        self,
        config: SisaConfig,
        dataset: Dataset,
        features: np.ndarray,
        scratch: Path,
        seed: int,
        clock: Clock,
    ) -> None:
        self.config = config
        self.clock = clock
        self.dataset = dataset
        self.scratch = scratch
        self.random = random.Random(seed)
        self.records, self.keys = place_records(dataset, config, features)
        self.base = LocalArtifactStore(scratch / "base")
        self.manifest = Manifest({})
        self.results: list[ShardTrainingResult] = []
        self._layers = 0

    @contextmanager
    def layer(self) -> Iterator[ScratchLayer]:
        self._layers += 1
        root = self.scratch / f"layer-{self._layers}"
        try:
            yield ScratchLayer(self.base, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def train(self) -> float:
        self.manifest, seconds, self.results = train_all(
            self.config, self.records, self.base, self.clock
        )
        return seconds

    def full_retrain(self, erase: str) -> float:
        retained = {
            s: [r for r in records if r.key != erase] for s, records in self.records.items()
        }
        with self.layer() as store:
            return train_all(self.config, retained, store, self.clock)[1]

    def single_request(self, key: str, *, check: bool) -> tuple[float, int, bool | None]:
        """Seconds, slices retrained, and (with ``check``) a bit-exactness spot check."""
        with self.layer() as store:
            started = self.clock()
            result = unlearn(self.config, self.records, [key], store, self.manifest)
            seconds = self.clock() - started
            (shard, outcome), *_ = result.shards.items()
            exact = None
            if check:
                exact = verify_bit_exact(
                    self.config,
                    shard,
                    result.retained_records[shard],
                    outcome.checkpoint_after,
                    store,
                ).bit_exact
            return seconds, outcome.slices_retrained, exact

    def coalesced(self, keys: Sequence[str]) -> tuple[float, int]:
        with self.layer() as store:
            started = self.clock()
            result = unlearn(self.config, self.records, keys, store, self.manifest)
            return self.clock() - started, len(result.shards)

    def sequential(self, keys: Sequence[str], bar: tqdm[Any]) -> float:
        records: ShardRecords = dict(self.records)
        manifest = self.manifest
        seconds = 0.0
        with self.layer() as store:
            for key in keys:
                started = self.clock()
                result = unlearn(self.config, records, [key], store, manifest)
                seconds += self.clock() - started
                records.update(result.retained_records)
                manifest = result.manifest
                bar.update(1)
        return seconds


def measure_config(
    dataset: Dataset,
    config: SisaConfig,
    scratch: Path,
    clock: Clock,
    *,
    seed: int,
    requests: int,
    ks: Sequence[int],
    base: PublicBase | None = None,
) -> dict[str, Any]:
    """Train ``config`` on the dataset (through ``base`` if given), then time a full retrain,
    ``requests`` single-subject erasures (the first checked bit for bit) and, for each K in
    ``ks``, K requests coalesced vs one after another."""
    features = dataset.x if base is None else base.features(dataset.x)
    test_x = dataset.test_x if base is None else base.features(dataset.test_x)
    bench = Bench(config, dataset, features, scratch, seed, clock)
    name = f"{dataset.name} S={config.shards} R={config.slices}" + (" base" if base else "")
    log(f"[{name}] {len(dataset.y)} records: training {config.shards} shards")
    full_train_seconds = bench.train()
    accuracy = Ensemble.load(config, bench.manifest, bench.base).accuracy(test_x, dataset.test_y)
    weighted = Ensemble.load(config, bench.manifest, bench.base, weighting="validation")
    weighted_accuracy = weighted.accuracy(test_x, dataset.test_y)

    request_keys = [bench.keys[0], *bench.random.sample(bench.keys[1:], requests - 1)]
    log(f"[{name}] full retrain (all shards, no cache)")
    full_retrain_seconds = bench.full_retrain(request_keys[0])

    request_seconds: list[float] = []
    slices_retrained: list[int] = []
    spot_check: bool | None = None
    for i, key in enumerate(
        tqdm(request_keys, desc=f"{name} single requests", file=sys.stderr, leave=False)
    ):
        seconds, slices, exact = bench.single_request(key, check=i == 0)
        request_seconds.append(seconds)
        slices_retrained.append(slices)
        spot_check = exact if exact is not None else spot_check
    mean_request = statistics.fmean(request_seconds)

    sequential_vs: dict[str, float] = {}
    ideal_vs: dict[str, dict[str, float]] = {}
    for k in ks:
        keys = bench.random.sample(bench.keys, k)
        log(f"[{name}] K={k}: coalesced")
        coalesced_seconds, shards = bench.coalesced(keys)
        with tqdm(total=k, desc=f"{name} K={k} sequential", file=sys.stderr, leave=False) as bar:
            sequential_seconds = bench.sequential(keys, bar)
        ideal = config.shards * (1 - (1 - 1 / config.shards) ** k)
        sequential_vs[str(k)] = sequential_seconds / coalesced_seconds
        ideal_vs[str(k)] = {
            "shards_retrained": shards,
            "ideal_shards": ideal,
            "ratio": shards / ideal,
            "coalesced_seconds": coalesced_seconds,
            "sequential_seconds": sequential_seconds,
        }

    # Expected work of one request relative to a full retrain, from the slice sizes alone:
    # slice k costs ∝ (k + 1) slices of data, the erased record's slice is uniform.
    r = config.slices
    expected_fraction = sum((k + 1) ** 2 for k in range(r)) / (r * r * (r + 1) / 2)
    return {
        "config": {"shards": config.shards, "slices": config.slices},
        "per_request_speedup": full_retrain_seconds / mean_request,
        "ensemble_accuracy": accuracy,
        "validation_weighted_accuracy": weighted_accuracy,
        "coalesced_vs_sequential": sequential_vs,
        "coalesced_vs_ideal": ideal_vs,
        "records": {
            "records": len(dataset.y),
            "full_train_seconds": full_train_seconds,
            "full_retrain_seconds": full_retrain_seconds,
            "retrain_seconds": mean_request,
            "retrain_seconds_median": statistics.median(request_seconds),
        },
        "detail": {
            "test_records": len(dataset.test_y),
            "requests_measured": len(request_seconds),
            "mean_slices_retrained": statistics.fmean(slices_retrained),
            "ideal_per_request_speedup": config.shards / expected_fraction,
            "bit_exact_spot_check": spot_check,
            "shards_too_small": sum(1 for r in bench.results if r.too_small),
            "mean_epochs_by_slice": [
                statistics.fmean(r.epochs_by_slice[i] for r in bench.results)
                for i in range(config.slices)
            ],
        },
    }
