"""How the SISA training defaults were chosen: candidate defaults side by side, judged on a tuning
split carved from each dataset's *training* part (the test split that bench/sisa.py reports on
is never read). Prints one JSON object on stdout.

For every dataset and candidate, in the same run: one model trained on the fit part, and the
S x R ensemble (all shards, trained in memory) on the same fit part, both with the candidate's
training knobs; the gap in points on the tuning part for each aggregation.

    python bench/sisa_defaults.py                      # the candidates below, S=16 R=8
    python bench/sisa_defaults.py --shards 8 --slices 4 --datasets credit_data,flchain
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sisa_data import Dataset, breast_cancer, credit_data, flchain, mnist1d
from models.sisa import (
    Ensemble,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    single_model_baseline,
)
from models.sisa.classifier import softmax_outputs as m_proba
from models.sisa.training import train_shard_in_memory

# Candidate training knobs, each applied on top of SisaConfig's defaults of this checkout.
CANDIDATES: dict[str, dict[str, Any]] = {
    "current": {},
    "lr1e-3": {"learning_rate": 1e-3},
    "batch64": {"batch_size": 64},
    "patience10": {"patience": 10},
    "val0.25": {"validation_fraction": 0.25},
    "hidden32": {"hidden": (32,)},
    "hidden128_64": {"hidden": (128, 64)},
    "lr1e-3_patience10": {"learning_rate": 1e-3, "patience": 10},
}

TUNE_PERCENT = 25


def tuning_split(dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, tuning rows) of the training part, by a seeded hash of the row."""
    tune = np.array(
        [
            int.from_bytes(hashlib.sha256(f"tune:{seed}:{i}".encode()).digest()[:8], "big") % 100
            < TUNE_PERCENT
            for i in range(len(dataset.y))
        ]
    )
    return np.flatnonzero(~tune), np.flatnonzero(tune)


def evaluate(
    dataset: Dataset, shards: int, slices: int, seed: int, name: str, knobs: dict[str, Any]
) -> dict[str, Any]:
    started = time.process_time()
    fit, tune = tuning_split(dataset, seed)
    x, y = dataset.x[fit], dataset.y[fit]
    tx, ty = dataset.x[tune], dataset.y[tune]
    config = SisaConfig(
        shards=shards,
        slices=slices,
        input_dim=x.shape[1],
        num_classes=dataset.num_classes,
        seed=seed,
    ).replace(**knobs)
    keys = [str(i) for i in fit]
    one = single_model_baseline(config, x, y, keys=keys).accuracy(tx, ty)
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(shards)}
    for row, key in zip(range(len(y)), keys, strict=True):
        shard = assign_shard(f"{dataset.name}/subject-{key}", config)
        by_shard[shard].append(TrainingRecord(key, assign_slice(key, config), x[row], int(y[row])))
    members, weights, too_small = {}, {}, 0
    for shard, records in by_shard.items():
        trained = train_shard_in_memory(config, shard, records)
        too_small += trained.result.too_small is not None
        if not records:
            continue
        trained.model.eval()
        members[shard] = trained.model
        weights[shard] = trained.result.validation_accuracy or 1.0
    uniform = Ensemble(config, members).accuracy(tx, ty)
    log_probs = sum(np.log(np.clip(m_proba(m, tx), 1e-12, None)) for m in members.values())
    geometric = float((np.argmax(log_probs, axis=1) == ty).mean())
    weighted = Ensemble(config, members, weights=weights).accuracy(tx, ty)
    return {
        "dataset": dataset.name,
        "candidate": name,
        "seed": seed,
        "knobs": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()},
        "one_model": one,
        "ensemble": uniform,
        "ensemble_validation_weighted": weighted,
        "gap_points": 100 * (one - uniform),
        "gap_points_weighted": 100 * (one - weighted),
        "gap_points_geometric": 100 * (one - geometric),
        "shards_too_small": too_small,
        "tune_records": len(ty),
        "cpu_seconds": time.process_time() - started,
    }


LOADERS = {
    "credit_data": partial(credit_data, 0),
    "flchain": partial(flchain, 0),
    "breast_cancer": partial(breast_cancer, 0),
    "mnist1d_5000": partial(mnist1d, 5000, 1000),
}


def _job(args: tuple[str, int, int, int, str]) -> dict[str, Any]:
    dataset_name, shards, slices, seed, candidate = args
    return evaluate(LOADERS[dataset_name](), shards, slices, seed, candidate, CANDIDATES[candidate])


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per dataset and candidate: the gaps' mean over seeds (and the one model's mean)."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row["dataset"], {}).setdefault(row["candidate"], {"n": 0})
        entry["n"] += 1
        for field in (
            "one_model",
            "ensemble",
            "gap_points",
            "gap_points_weighted",
            "gap_points_geometric",
        ):
            entry[field] = entry.get(field, 0.0) + row[field]
    for per_candidate in out.values():
        for entry in per_candidate.values():
            for field in list(entry):
                if field != "n":
                    entry[field] /= entry["n"]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--seeds", default="0,1,2", help="config and tuning-split seeds")
    parser.add_argument("--datasets", default="credit_data,flchain,breast_cancer")
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    jobs = [
        (d, args.shards, args.slices, int(seed), c)
        for d in args.datasets.split(",")
        for c in args.candidates.split(",")
        for seed in args.seeds.split(",")
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = []
        for row in pool.map(_job, jobs):
            print(
                f"{row['dataset']:>14} {row['candidate']:>14} one={row['one_model']:.4f} "
                f"ens={row['ensemble']:.4f} gap={row['gap_points']:+.2f} "
                f"w={row['gap_points_weighted']:+.2f} g={row['gap_points_geometric']:+.2f} "
                f"s={row['seed']} small={row['shards_too_small']} "
                f"{row['cpu_seconds']:.0f}s",
                file=sys.stderr,
            )
            rows.append(row)
    summary = summarise(rows)
    print(
        json.dumps(
            {"shards": args.shards, "slices": args.slices, "summary": summary, "rows": rows},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
