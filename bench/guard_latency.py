"""Chat latency with and without the guard, and approval → active rules at up to 20 subjects,
on TOFU's authors, measured without the TOFU fine-tune (bench/guard.py needs it for leaks).

Prints one JSON object (progress on stderr):

- `time_to_active`: for each k, the k-th author's request activated with the k − 1 before it in
  force, through the worker's own code (`calibrate_activation`, as bench/guard.py times it), p95
  over repeats. Authors are taken in order from every `--forget` file (TOFU: the 10 forget
  authors, then the 15 retain authors, so k = 20 exists); retained answers come from
  `--retain` rows whose author is never erased.
- `chat_latency` at `--latency-k` erased authors: the same prompts answered by the chat guard
  (models.generative.chat, what `POST /v1/chat/completions` runs) and by the model alone,
  alternated prompt by prompt, whole (p95 ratio) and streamed (time to the first text). The
  model is `--model-dir`, or the base SmolLM2-135M-Instruct: it does not know the authors, so
  its answers are not the fine-tune's, and the guard takes the paths those answers lead to;
  what is measured is the guard's cost beside generation on a model of the fine-tune's size.

    python bench/guard_latency.py --cache-dir /work/cache > bench/results/guard-attacks-latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.guard_attacks import chat_latency
from bench.guard_extra import group_rows
from models.assets.smollm2 import materialize_smollm2
from models.assets.tofu import (
    FORGET_FILE,
    QA,
    RETAIN_FILE,
    author_specs,
    group_by_author,
    load_qa,
    tofu_file,
)
from models.generative.chat import Guard
from models.generative.embedder import CachingEmbedder, MiniLMEmbedder
from models.generative.generator import Generator
from models.generative.refinement import DEFAULT_REFUSAL
from models.generative.rules import ForgetSpec, compile_rules
from models.generative.verifier import Verifier, masked_fact_texts
from service.registry.config import GenerativePolicy
from service.rules.activation import calibrate_activation
from service.rules.calibration import evidence_key, request_evidence
from service.rules.rulesets import merge_rule_sets

POLICY = GenerativePolicy(alpha=0.1, delta=0.05, alpha_b=0.1, max_budget=4)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_authors(files: Sequence[Path]) -> tuple[list[ForgetSpec], list[list[QA]]]:
    """Every author of every file, in file order, then author order: specs and rows."""
    specs: list[ForgetSpec] = []
    rows: list[list[QA]] = []
    for path in files:
        grouped = group_by_author(group_rows(load_qa(path)))
        for a in sorted(grouped):
            specs.append(author_specs(grouped[a])[a])
            rows.append(list(grouped[a]))
    return specs, rows


class Worker:
    """What a long-running worker keeps: the embedder, its cache, and each earlier request's
    stored evidence (the service keeps it with the rule-set version; computed once here)."""

    def __init__(
        self, specs: Sequence[ForgetSpec], negatives: list[str], prompts: list[str | None]
    ) -> None:
        self.specs = specs
        self.negatives = negatives
        self.prompts = prompts  # each retained answer's question: scored with it, as served
        self.embedder = MiniLMEmbedder()
        self.cache = CachingEmbedder(self.embedder)
        self.cache.embed(negatives)  # a running worker has embedded them before
        self.rules: dict[str, Any] = {}
        self.evidence: dict[str, Any] = {}

    def stored(self, upto: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Rules and stored evidence of requests 0 … upto − 1."""
        for i in range(upto):
            rid = f"{i:06d}"
            if rid not in self.evidence:
                self.rules[rid] = compile_rules(self.specs[i])
                self.evidence[rid] = request_evidence(
                    self.rules[rid], self.embedder, self.cache, self.negatives, seed=rid,
                    negative_prompts=self.prompts,
                ).to_json()  # fmt: skip
                # A serving process has embedded the facts of the versions it served.
                self.cache.embed(masked_fact_texts(self.rules[rid]))
        ids = [f"{i:06d}" for i in range(upto)]
        stored = {
            "key": evidence_key("minilm", self.negatives),
            "by_request": {rid: self.evidence[rid] for rid in ids},
        }
        return {rid: self.rules[rid] for rid in ids}, stored


def time_to_active(worker: Worker, k: int, repeats: int, budget_s: float) -> dict[str, Any]:
    """The k-th request's activation with the k − 1 before it in force, repeated: compile,
    score its leaks, pool with the stored evidence, calibrate λ (the worker's part: the rules
    are in force once it commits); then the serving verifier of the merged rules, timed on its
    own (a serving process builds it at its first answer after the activation, embedding the
    facts it has not embedded before: here the new request's)."""
    earlier, stored = worker.stored(k - 1)
    runs: list[tuple[float, float, float, float]] = []
    threshold = None
    while len(runs) < repeats and (not runs or sum(r[0] for r in runs) < budget_s):
        serving_cache = CachingEmbedder(worker.embedder)
        serving_cache.embed([t for rs in earlier.values() for t in masked_fact_texts(rs)])
        t, c = time.perf_counter(), time.process_time()
        new = compile_rules(worker.specs[k - 1])
        done = calibrate_activation(
            f"{k - 1:06d}", new, earlier, stored, worker.negatives, POLICY,
            embedder_kind="minilm", scoring_embedder=worker.embedder, cache=worker.cache,
            score_negatives=False,
        )  # fmt: skip
        t1, c1 = time.perf_counter(), time.process_time()
        Verifier(merge_rule_sets(done.rule_sets), worker.embedder, fact_embedder=serving_cache)
        runs.append((t1 - t, c1 - c, time.perf_counter() - t1, time.process_time() - c1))
        threshold = done.threshold.threshold
    return {"k": k, "runs": len(runs), **_figures(runs), "threshold": threshold}


def together(worker: Worker, k: int, repeats: int) -> dict[str, Any]:
    """k requests approved together, none in force before: one activation (``also_new``), as
    the worker runs it for every request waiting on the model, then the serving verifier of
    all k (none of their facts embedded before: it grows with k, once, at the first answer)."""
    runs: list[tuple[float, float, float, float]] = []
    threshold = None
    for _ in range(repeats):
        ids = [f"{i:06d}" for i in range(k)]
        cache = CachingEmbedder(worker.embedder)
        cache.embed(worker.negatives)
        t, c = time.perf_counter(), time.process_time()
        rules = {rid: compile_rules(worker.specs[i]) for i, rid in enumerate(ids)}
        done = calibrate_activation(
            ids[0], rules[ids[0]], {}, {}, worker.negatives, POLICY,
            embedder_kind="minilm", scoring_embedder=worker.embedder, cache=cache,
            score_negatives=False, also_new={rid: rules[rid] for rid in ids[1:]},
        )  # fmt: skip
        t1, c1 = time.perf_counter(), time.process_time()
        Verifier(merge_rule_sets(done.rule_sets), worker.embedder, fact_embedder=cache)
        runs.append((t1 - t, c1 - c, time.perf_counter() - t1, time.process_time() - c1))
        threshold = done.threshold.threshold
        n = done.threshold.n
    return {"k": k, "runs": len(runs), **_figures(runs), "threshold": threshold, "n": n}


def _figures(runs: Sequence[tuple[float, float, float, float]]) -> dict[str, Any]:
    wall, cpu, serve_wall, serve_cpu = (np.array(column) for column in zip(*runs, strict=True))
    return {
        "p95_s": float(np.percentile(wall, 95)),
        "median_s": float(np.percentile(wall, 50)),
        # CPU seconds of this process (one torch thread): what the work costs, whatever else
        # the shared machine runs; wall seconds include waiting for a core.
        "cpu_p95_s": float(np.percentile(cpu, 95)),
        "cpu_median_s": float(np.percentile(cpu, 50)),
        "serving_verifier_p95_s": float(np.percentile(serve_wall, 95)),
        "serving_verifier_cpu_median_s": float(np.percentile(serve_cpu, 50)),
        "target_p95_s": 5.0,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--forget", default=f"{tofu_file(FORGET_FILE)},{tofu_file(RETAIN_FILE)}",
        help="comma-separated Q/A files whose authors are erased in order",
    )  # fmt: skip
    parser.add_argument("--retain", type=Path, default=tofu_file(RETAIN_FILE))
    parser.add_argument("--ks", default="1,5,10,20")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--activation-budget-s", type=float, default=150.0)
    parser.add_argument(
        "--together", action="store_true", help="also k requests approved at once, by k"
    )
    parser.add_argument("--latency-k", type=int, default=10)
    parser.add_argument("--latency-prompts", type=int, default=30, help="0: no latency run")
    parser.add_argument(
        "--latency-threshold",
        type=float,
        default=None,
        help="λ for the latency run (default: "
        "the activation's at --latency-k, when measured in the same run)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path(".lethe/cache"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    specs, rows = load_authors([Path(p) for p in args.forget.split(",")])
    ks = [int(k) for k in args.ks.split(",") if k]
    # Retained: the authors of the --forget files never erased here, else the --retain rows.
    erased = max([*ks, args.latency_k if args.latency_prompts else 0])
    retain_rows = [r for group in rows[erased:] for r in group]
    retain_rows = retain_rows or load_qa(args.retain)
    negatives = [r.answer for r in retain_rows][:150]
    prompts: list[str | None] = [r.question for r in retain_rows][:150]
    log(f"authors: {len(specs)}; retained rows kept: {len(retain_rows)}")
    activation = []
    worker = Worker(specs, negatives, prompts)
    for k in ks:
        if k > len(specs):
            activation.append({"k": k, "skipped": f"only {len(specs)} authors"})
            continue
        activation.append(time_to_active(worker, k, args.repeats, args.activation_budget_s))
        log(f"k={k}: {activation[-1]}")
    batched = (
        [together(worker, k, max(1, args.repeats // 2)) for k in ks if k <= len(specs)]
        if args.together
        else []
    )
    for row in batched:
        log(f"together k={row['k']}: {row}")
    lam = next((a.get("threshold") for a in activation if a["k"] == args.latency_k), None)
    lam = args.latency_threshold if args.latency_threshold is not None else lam
    latency = measure_latency(args, specs, retain_rows, lam) if args.latency_prompts else None
    output = {
        "time_to_active": activation,
        "time_to_active_together": batched,
        "chat_latency": latency,
        "config": run_config(args, len(specs), ks),
        "context": {
            "runtime_s": time.perf_counter() - started,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    print(json.dumps(output, indent=2, ensure_ascii=False))


def run_config(args: argparse.Namespace, authors: int, ks: Sequence[int]) -> dict[str, Any]:
    return {
        "forget": args.forget,
        "retain": str(args.retain),
        "authors": authors,
        "ks": list(ks),
        "repeats": args.repeats,
        "latency_k": args.latency_k,
        "latency_prompts": args.latency_prompts,
        "max_new_tokens": args.max_new_tokens,
        "model": str(args.model_dir)
        if args.model_dir
        else "base SmolLM2-135M-Instruct "
        "(not the TOFU fine-tune: the guard's cost, not its leak figures)",
        "threads": torch.get_num_threads(),
    }


def measure_latency(
    args: argparse.Namespace,
    specs: Sequence[ForgetSpec],
    retain_rows: Sequence[Any],
    threshold: float | None,
) -> dict[str, Any]:
    k = min(args.latency_k, len(specs))
    model_dir = args.model_dir or materialize_smollm2(args.cache_dir)
    generator = Generator.from_dir(model_dir)
    embedder = MiniLMEmbedder()
    rules = merge_rule_sets({f"{i:06d}": compile_rules(specs[i]) for i in range(k)})
    verifier = Verifier(rules, embedder)
    lam = threshold if threshold is not None else 0.65
    guard = Guard(verifier, threshold=lam, budget=POLICY.max_budget, refusal_text=DEFAULT_REFUSAL)
    forget_prompts = [f.question or "" for s in specs[:k] for f in s.facts]
    retained = [r.question for r in retain_rows]
    rng = random.Random("latency")
    half = args.latency_prompts // 2
    prompts = rng.sample(forget_prompts, min(half, len(forget_prompts)))
    prompts += rng.sample(retained, min(args.latency_prompts - len(prompts), len(retained)))
    generator.generate("Warm-up: say hello.", max_new_tokens=4)
    embedder.embed(["warm-up"])
    _ = generator.token_index
    log(f"chat latency: {len(prompts)} prompts, k={k}")
    kinds = ["forget"] * min(half, len(forget_prompts))
    kinds += ["retained"] * (len(prompts) - len(kinds))
    figures = chat_latency(
        generator, guard, prompts, max_new_tokens=args.max_new_tokens, kinds=kinds
    )
    return {
        **figures,
        "k": k,
        "threshold": guard.threshold,
        "threshold_note": "the activation's λ at this k (0.65 when it was not certified); λ "
        "moves which path the guard takes, not what a path costs",
    }


if __name__ == "__main__":
    main()
