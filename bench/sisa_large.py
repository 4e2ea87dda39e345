"""MNIST-1D at a large size (default 100k) for bench/sisa.py's question, in stages that each
print their figures as soon as they are measured (a full bench/sisa.py run at this size takes
hours on a shared 2-core machine). One JSON line per stage on stdout:

1. one model on all data (raw inputs);
2. S = 16, R = 8 with the library defaults (``default_shards`` gives 16 at this size): ensemble
   accuracy (uniform and validation-weighted) and full-training CPU seconds;
3. the public base (bench/sisa_data.py) and one head on it, all data;
4. S = 16, R = 8 heads on the base: accuracy, full-training CPU seconds, and single-subject
   erasures (unlearn from the trained ensemble) timed, the first checked bit for bit.

The per-request speed-up here is full *training* CPU time / mean single-request retrain time
(a full retrain on the retained data costs the same as the training, within noise: bench/sisa.py
measures both at smaller sizes).

    python bench/sisa_large.py --size 100000 > bench/results/sisa_mnist1d_100k.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sisa_data import mnist1d, mnist1d_public_base
from bench.sisa_measure import Bench, log
from models.sisa import DEFAULT_SLICES, Ensemble, SisaConfig, default_shards, single_model_baseline


def emit(stage: str, **figures: Any) -> None:
    print(json.dumps({"stage": stage, **figures}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--test-size", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--base-samples", type=int, default=40_000)
    parser.add_argument("--base-epochs", type=int, default=20)
    parser.add_argument("--skip-raw-ensemble", action="store_true")
    args = parser.parse_args(argv)
    clock = time.process_time
    dataset = mnist1d(args.size, args.test_size)
    n = len(dataset.y)
    config = SisaConfig(
        shards=default_shards(n), slices=DEFAULT_SLICES, input_dim=40, num_classes=10
    )
    keys = [str(i) for i in range(n)]
    log(f"[{dataset.name}] one model")
    started = clock()
    one = single_model_baseline(config, dataset.x, dataset.y, keys=keys)
    one_accuracy = one.accuracy(dataset.test_x, dataset.test_y)
    emit("one_model", records=n, accuracy=one_accuracy, cpu_seconds=clock() - started)

    with tempfile.TemporaryDirectory(prefix="lethe-bench-sisa-large-") as folder:
        scratch = Path(folder)
        if not args.skip_raw_ensemble:
            log(f"[{dataset.name}] S={config.shards} R={config.slices}")
            bench = Bench(config, dataset, dataset.x, scratch / "raw", 0, clock)
            seconds = bench.train()
            accuracy = Ensemble.load(config, bench.manifest, bench.base).accuracy(
                dataset.test_x, dataset.test_y
            )
            weighted = Ensemble.load(
                config, bench.manifest, bench.base, weighting="validation"
            ).accuracy(dataset.test_x, dataset.test_y)
            emit(
                "defaults_raw",
                shards=config.shards,
                slices=config.slices,
                accuracy=accuracy,
                validation_weighted_accuracy=weighted,
                gap_points=100 * (one_accuracy - accuracy),
                full_train_cpu_seconds=seconds,
                shards_too_small=sum(1 for r in bench.results if r.too_small),
            )

        log(f"pretraining the public base on {args.base_samples} examples")
        started = clock()
        base = mnist1d_public_base(args.base_samples, args.base_epochs)
        base_seconds = clock() - started
        features = base.features(dataset.x)
        test_features = base.features(dataset.test_x)
        head = config.replace(input_dim=base.feature_dim, base_hash=base.content_hash, hidden=(32,))
        started = clock()
        base_one = single_model_baseline(head, features, dataset.y, keys=keys).accuracy(
            test_features, dataset.test_y
        )
        emit(
            "one_model_on_public_base",
            accuracy=base_one,
            cpu_seconds=clock() - started,
            base_pretraining_cpu_seconds=base_seconds,
            base=base.attestation(),
        )

        log(f"[{dataset.name}] heads S={head.shards} R={head.slices} on the base")
        bench = Bench(head, dataset, features, scratch / "base", 0, clock)
        seconds = bench.train()
        accuracy = Ensemble.load(head, bench.manifest, bench.base, base=base).accuracy(
            dataset.test_x, dataset.test_y
        )
        emit(
            "public_base_defaults",
            shards=head.shards,
            slices=head.slices,
            accuracy=accuracy,
            gap_points_vs_one_model=100 * (one_accuracy - accuracy),
            gap_points_vs_one_model_on_base=100 * (base_one - accuracy),
            full_train_cpu_seconds=seconds,
        )
        request_seconds, exact = [], None
        for i, key in enumerate(bench.random.sample(bench.keys, args.requests)):
            spent, _, check = bench.single_request(key, check=i == 0)
            request_seconds.append(spent)
            exact = check if check is not None else exact
            log(f"[{dataset.name}] request {i + 1}/{args.requests}: {spent:.1f}s")
        mean = statistics.fmean(request_seconds)
        emit(
            "public_base_requests",
            requests=len(request_seconds),
            mean_request_cpu_seconds=mean,
            per_request_speedup_vs_full_training=seconds / mean,
            bit_exact_spot_check=exact,
        )


if __name__ == "__main__":
    main()
