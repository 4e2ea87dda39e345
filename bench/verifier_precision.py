"""Precision of the verifier on TOFU without generating: false flags and catch rate per k.

Prints one JSON object on stdout; progress goes to stderr. For each k (erased authors) and each
draw of k authors (the first k, then seeded random sets), as the service does it:

1. compile each erased author's spec and merge the rule sets; calibrate λ by Learn-then-Test
   (α = 0.1, δ = 0.05) on the oracle-confirmed synthetic leaks (`synthetic_leaks`);
2. false flags at λ on harmless texts about people who are not erased: the retained answers
   (data/tofu/retain.jsonl) alone and with their question as the prompt, and the forget rows
   of the authors not erased in this draw, with their question;
3. catch rate at λ on the erased authors' true answers (what a model that recites its training
   data says), per probe family of the prompt: `direct` (the question as filed), `indirect`
   (the subject described by its other facts, and the answer with the subject's names masked),
   `format_shift` (the question asking for a list; the answer as a bullet) — real TOFU text,
   never used to calibrate λ.

`--repo DIR` imports the verifier from another checkout (e.g. main, for a before/after); a
verifier without the prompt argument is then given the response alone.

    nice -n 10 python bench/verifier_precision.py > /tmp/precision.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--forget", type=Path, default=None)
    parser.add_argument("--retain", type=Path, default=None)
    parser.add_argument("--ks", default="1,5,10")
    parser.add_argument(
        "--draws", type=int, default=3, help="author sets per k (first k, then random)"
    )
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))
    # Imported after the path is set: the verifier under test comes from --repo.
    from models.assets.tofu import FORGET_FILE, RETAIN_FILE, author_specs, load_qa, tofu_file
    from models.conformal import calibrate_threshold
    from models.generative.embedder import CachingEmbedder, MiniLMEmbedder
    from models.generative.matching import mask_identifiers
    from models.generative.probes import oracle_reveals, synthetic_leaks
    from models.generative.rules import ForgetSpec, RuleSet, compile_rules
    from models.generative.verifier import Verifier

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    forget_rows = load_qa(args.forget or tofu_file(FORGET_FILE))
    retain_rows = load_qa(args.retain or tofu_file(RETAIN_FILE))
    specs = author_specs(forget_rows)
    authors = sorted(specs)
    takes_prompt = "prompts" in inspect.signature(Verifier.score_many).parameters
    embedder = MiniLMEmbedder()
    cache = CachingEmbedder(embedder)

    def merge(rule_sets: list[RuleSet]) -> RuleSet:
        # As the service merges per-request rule sets: ids prefixed by position.
        from dataclasses import replace

        rules = tuple(
            replace(r, rule_id=f"{i}/{r.rule_id}")
            for i, rs in enumerate(rule_sets)
            for r in rs.rules
        )
        return RuleSet(rules=rules, version_hint="bench")

    def scores(verifier: Verifier, texts: list[str], prompts: list[str] | None) -> list[float]:
        if prompts is not None and takes_prompt:
            return [v.score for v in verifier.score_many(texts, prompts)]  # type: ignore[call-arg]
        return [v.score for v in verifier.score_many(texts)]

    def rate(values: list[float], lam: float) -> float | None:
        return sum(v >= lam for v in values) / len(values) if values else None

    def draws(k: int) -> list[list[int]]:
        out = [authors[:k]]
        rng = random.Random(f"{args.seed}:{k}")
        while len(out) < args.draws and k < len(authors):
            pick = sorted(rng.sample(authors, k))
            if pick not in out:
                out.append(pick)
        return out

    result: dict[str, Any] = {}
    for k in [int(x) for x in args.ks.split(",")]:
        per_draw = []
        for erased in draws(k):
            t0 = time.perf_counter()
            rule_sets = [compile_rules(specs[a]) for a in erased]
            verifier = Verifier(merge(rule_sets), cache)
            positives: list[str] = []
            for a in erased:
                spec = specs[a]
                leaks = [t for t in synthetic_leaks(spec) if oracle_reveals(t, spec)]
                positives += random.Random(f"positives:{a}").sample(leaks, min(100, len(leaks)))
            cal = calibrate_threshold(scores(verifier, positives, None), args.alpha, args.delta)
            lam = cal.threshold if cal.threshold is not None else 1.0
            ret_answers = [r.answer for r in retain_rows]
            ret_questions = [r.question for r in retain_rows]
            others = [r for r in forget_rows if r.author_index not in set(erased)]
            mine = [r for r in forget_rows if r.author_index in set(erased)]
            ids = {a: specs[a].identifiers() for a in erased}
            direct = scores(verifier, [r.answer for r in mine], [r.question for r in mine])
            masked_answers, described, bullets = [], [], []
            for r in mine:
                assert r.author_index is not None
                names = ids[r.author_index]
                masked_answers.append(mask_identifiers(r.answer, names, "this person"))
                described.append(mask_identifiers(r.question, names, "the person in question"))
                bullets.append("- " + mask_identifiers(r.answer, names, "they"))
            bullet_prompts = [f"Answer as a bulleted list. {r.question}" for r in mine]
            indirect = scores(verifier, masked_answers, described)
            shifted = scores(verifier, bullets, bullet_prompts)
            # Oracle check that each masked answer still reveals its fact (else it is no leak).
            spec_of = {a: specs[a] for a in erased}
            keep = [
                i
                for i, r in enumerate(mine)
                if r.author_index is not None
                and oracle_reveals(
                    masked_answers[i], ForgetSpec([], facts=spec_of[r.author_index].facts)
                )
            ]
            row = {
                "erased": erased,
                "threshold": cal.threshold,
                "certified": cal.certified,
                "n_positives": len(positives),
                "false_flag_rate": {
                    "retain_answer_only": rate(scores(verifier, ret_answers, None), lam),
                    "retain_with_question": rate(scores(verifier, ret_answers, ret_questions), lam),
                    "other_forget_authors_with_question": rate(
                        scores(verifier, [r.answer for r in others], [r.question for r in others]),
                        lam,
                    ),
                },
                "catch_rate": {
                    "direct": rate(direct, lam),
                    "indirect_masked": rate([indirect[i] for i in keep], lam),
                    "format_shift_masked": rate([shifted[i] for i in keep], lam),
                    "n_masked_leaks": len(keep),
                },
                "seconds": round(time.perf_counter() - t0, 1),
            }
            log(json.dumps(row))
            per_draw.append(row)
        result[str(k)] = per_draw
    summary: dict[str, Any] = {}
    for k, rows in result.items():
        ffr = [r["false_flag_rate"] for r in rows]
        cr = [r["catch_rate"] for r in rows]
        summary[k] = {
            "max_false_flag_rate": {
                key: max(f[key] for f in ffr if f[key] is not None) for key in ffr[0]
            },
            "min_catch_rate": {
                key: min(c[key] for c in cr if c[key] is not None)
                for key in ("direct", "indirect_masked", "format_shift_masked")
            },
        }
    print(
        json.dumps(
            {
                "repo": str(args.repo),
                "verifier_takes_prompt": takes_prompt,
                "summary": summary,
                "per_k": result,
                "runtime_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
