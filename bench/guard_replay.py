"""Replay refinement's answer screen on the calibration probes a `bench/guard.py` run recorded.

    python bench/guard_replay.py RUN.json PROBES.jsonl [--forget FILE] [--authors TAG]

RUN.json is the bench's output (λ per k), PROBES.jsonl its `--dump` (or
bench/results/guard-budget-probes-*.jsonl, filtered by `--authors`). For every probe that
refinement handled, the screen (`Verifier.mentions_subject` on a flagged first answer that
back-off did not rescue, then on each regenerated attempt) is applied to the recorded attempts
in order. The replay is exact for what the screen changes: it only ends a trajectory early, at
the first answer the screen refuses, so every attempt before that point is what the run
generated. A probe refused at its first answer leaves B's and the exit's calibration, as in
`rounds_to_acceptance`. Prints one JSON object: per k, the probes the screen refuses (by how
the run recorded them: served, never accepted, refused later), the regeneration rounds before
and after, and B and the early exit recalibrated on the replayed outcomes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.guard import ALPHA_B, DELTA, MAX_BUDGET
from bench.guard_extra import group_rows
from models.assets.tofu import FORGET_FILE, author_specs, load_qa, tofu_file
from models.conformal import calibrate_budget, calibrate_exit
from models.generative.embedder import MiniLMEmbedder
from models.generative.refinement import (
    Reason,
    RefinementResult,
    exit_calibration_point,
    rounds_to_acceptance,
)
from models.generative.rules import compile_rules
from models.generative.verifier import Verdict, Verifier
from service.rules.rulesets import merge_rule_sets


def replay_probe(row: dict[str, Any], verifier: Verifier, lam: float) -> tuple[str, int]:
    """(how the probe ends with the screen, rounds spent): the run's own outcome, or
    `subject_in_answer` at the flagged first answer or the first regenerated answer that names
    a forgotten subject."""
    backed_off_at_once = row["reason"] == "redacted" and int(row["rounds"]) == 0
    if (
        row["reason"] not in ("accepted", "subject_in_query")
        and not backed_off_at_once
        and verifier.mentions_subject(row["attempts"][0], lam)
    ):
        return "subject_in_answer", 0
    texts = list(row["attempts"][1:])
    if row["reason"] == "redacted" and row["rounds"] >= 1:
        texts.append(row["response"])  # the backed-off text that was served
    for offset, text in enumerate(texts, start=1):
        if verifier.mentions_subject(text, lam):
            return "subject_in_answer", min(offset, int(row["rounds"]))
    return str(row["reason"]), int(row["rounds"])


def replayed_result(row: dict[str, Any], reason: str, spent: int) -> RefinementResult:
    """The replayed outcome as refinement's own result (scores only: the dump keeps no rule
    hits), so B and the exit read it through the same functions as the bench and the worker."""
    accepted = reason in ("accepted", "accepted_after_feedback", "redacted")
    verdicts = [Verdict(float(s), [], []) for s in row["scores"][: spent + 1]]
    return RefinementResult("", spent, accepted, not accepted, cast(Reason, reason), verdicts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("probes", type=Path)
    parser.add_argument("--forget", type=Path, default=tofu_file(FORGET_FILE))
    parser.add_argument("--authors", default=None, help="keep rows with this `authors` tag")
    args = parser.parse_args(argv)
    per_k_run = json.loads(args.run.read_text())["per_k"]
    rows = [json.loads(line) for line in args.probes.read_text().splitlines() if line.strip()]
    rows = [
        r
        for r in rows
        if r.get("kind") == "budget_probe"
        and (args.authors is None or r.get("authors") == args.authors)
    ]
    specs = author_specs(group_rows(load_qa(args.forget)))
    authors = sorted(specs)
    embedder = MiniLMEmbedder()
    out: dict[str, Any] = {}
    for k in sorted({int(r["k"]) for r in rows}):
        lam = float(per_k_run[str(k)]["threshold"])
        rules = {f"{a:06d}": compile_rules(specs[a]) for a in authors[:k]}
        verifier = Verifier(merge_rule_sets(rules), embedder)
        results: list[RefinementResult] = []
        before = after = 0
        # Probes the screen refuses, by how the run recorded them: served, never accepted,
        # or refused later (by the answer screen at a regenerated answer).
        refused_served = refused_never = refused_later = 0
        for row in (r for r in rows if int(r["k"]) == k):
            reason, spent = replay_probe(row, verifier, lam)
            before += int(row["rounds"])
            after += spent
            recorded = (row["reason"], int(row["rounds"]))
            if reason == "subject_in_answer" and (reason, spent) != recorded:
                if row["reason"] == "budget_exhausted":
                    refused_never += 1
                elif row["reason"] == "subject_in_answer":
                    refused_later += 1
                else:
                    refused_served += 1
            results.append(replayed_result(row, reason, spent))
        rounds = [r for r in map(rounds_to_acceptance, results) if r is not None]
        points = [p for p in map(exit_calibration_point, results) if p is not None]
        budget = calibrate_budget(rounds, ALPHA_B, MAX_BUDGET)
        exit_cal = calibrate_exit(
            [s for s, ok in points if ok], [s for s, ok in points if not ok], ALPHA_B, DELTA
        )
        out[str(k)] = {
            "threshold": lam,
            "probes": len(rounds),
            "refused_by_screen_were_served": refused_served,
            "refused_by_screen_were_never_accepted": refused_never,
            "refused_by_screen_were_refused_later": refused_later,
            "regeneration_rounds": {"recorded": before, "with_screen": after},
            "budget": budget.budget,
            "budget_certified": budget.certified,
            "budget_reason": budget.reason,
            "exit_certified": exit_cal.certified,
            "exit_reason": exit_cal.reason,
        }
    print(json.dumps({"per_k": out}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
