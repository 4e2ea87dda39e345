"""rapidfuzz's similarity against difflib's, which it replaced, inside the verifier, on TOFU.

Scores with each implementation, under the rules of the first `--k` forget authors: their
synthetic leaks and their names misspelt (positives: a miss is a score below λ), and the true
answers of retain rows with their questions (negatives: a flag is a score at or above λ).
Prints one JSON object: per implementation and λ, the miss and flag rates. No generation, no
fine-tune needed.

    python bench/guard_fuzzy.py > bench/results/guard-attacks-fuzzy-DATE.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import models.generative.matching as matching
import models.generative.normalize as normalize
from bench.guard_attacks import misspell
from bench.guard_extra import group_rows
from models.assets.tofu import FORGET_FILE, RETAIN_FILE, author_specs, load_qa, tofu_file
from models.generative.embedder import MiniLMEmbedder
from models.generative.probes import synthetic_leaks
from models.generative.rules import compile_rules, merge_rule_sets
from models.generative.verifier import Verifier

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def difflib_ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio() if a and b else 0.0


def difflib_ratio_above(a: str, b: str, floor: float) -> float:
    value = difflib_ratio(a, b)
    return value if value > floor else 0.0


def use(ratio: Callable[[str, str], float], above: Callable[[str, str, float], float]) -> None:
    """Swap the similarity every module that matches text uses, and drop cached results."""
    for module in (normalize, matching):
        module.ratio = ratio  # type: ignore[attr-defined]
        module.ratio_above = above  # type: ignore[attr-defined]
    matching._similar_words.cache_clear()


def rates(scores: Sequence[float], below: bool) -> dict[str, float]:
    return {
        f"{t:g}": sum((s < t) if below else (s >= t) for s in scores) / len(scores)
        for t in THRESHOLDS
    }


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-negatives", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    specs = author_specs(group_rows(load_qa(tofu_file(FORGET_FILE))))
    erased = [specs[a] for a in sorted(specs)[: args.k]]
    rules = merge_rule_sets([compile_rules(s) for s in erased])
    verifier = Verifier(rules, MiniLMEmbedder())
    leaks = [t for s in erased for t in synthetic_leaks(s)]
    misspelt = [f"The author is {misspell(n)}." for s in erased for n in s.subject_names]
    retain = load_qa(tofu_file(RETAIN_FILE))[: args.max_negatives]
    kept = normalize.ratio, normalize.ratio_above
    out: dict[str, Any] = {}
    for name, pair in (("difflib", (difflib_ratio, difflib_ratio_above)), ("rapidfuzz", kept)):
        use(*pair)
        positives = [v.score for v in verifier.score_many(leaks)]
        names = [v.score for v in verifier.score_many(misspelt)]
        negatives = [
            v.score
            for v in verifier.score_many([r.answer for r in retain], [r.question for r in retain])
        ]
        out[name] = {
            "synthetic_leak_miss_rate": rates(positives, below=True),
            "misspelt_name_miss_rate": rates(names, below=True),
            "retained_answer_flag_rate": rates(negatives, below=False),
        }
    use(*kept)
    changed = {
        key: {
            t: round(out["rapidfuzz"][key][t] - out["difflib"][key][t], 4)
            for t in out["rapidfuzz"][key]
        }
        for key in out["rapidfuzz"]
    }
    print(
        json.dumps(
            {
                **out,
                "rapidfuzz_minus_difflib": changed,
                "config": {
                    "k": args.k,
                    "synthetic_leaks": len(leaks),
                    "misspelt_names": len(misspelt),
                    "retained_answers": len(retain),
                    "thresholds": THRESHOLDS,
                    "embedder": "all-MiniLM-L6-v2",
                },
                "runtime_s": time.perf_counter() - started,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
