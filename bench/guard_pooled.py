"""The guard's attack runs pooled: leaks per attack family over every k and author set measured.

Each `bench/guard.py --families all` run tests a few attacks per family (4 to 10: a run takes
an hour or more on a 2-core machine), so one run bounds a family's leak rate only near 0.5.
This script adds up the attacks of the runs it is given, per family, and prints the guarded
leaks with their exact one-sided 95 % upper bound (Clopper-Pearson), beside the unguarded
fine-tune's leaks on the same attacks.

What pooling assumes, and the JSON says: the attacks are independent trials of one guard.
They are not quite: every run guards the same TOFU fine-tune, runs at different k share
authors, and λ is calibrated per run. The pooled bound is a bound over the conditions measured
(k = 1, 5, 10, 20; both author sets), not per k.

    .venv/bin/python bench/guard_pooled.py bench/results/guard-attacks-*-k*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Run as a plain script from anywhere: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.conformal.pvalues import clopper_pearson_upper

DELTA = 0.05


def runs_of(path: Path) -> list[dict[str, Any]]:
    """One entry per k the file measured: its family figures and where they came from."""
    data = json.loads(path.read_text())
    by_k = data.get("attack_leak_rate_by_family") or {}
    return [{"file": path.name, "k": k, "families": families} for k, families in by_k.items()]


def pool(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Attacks, guarded leaks and unguarded leaks per family, summed over `runs`."""
    totals: dict[str, dict[str, int]] = {}
    for run in runs:
        for family, f in run["families"].items():
            row = totals.setdefault(family, {"n": 0, "lethe_leaks": 0, "unguarded_leaks": 0})
            n = int(f["n"])
            row["n"] += n
            row["lethe_leaks"] += int(f["lethe_leaks"])
            row["unguarded_leaks"] += round(float(f["unguarded"]) * n)
    families = {family: _with_bound(row) for family, row in sorted(totals.items())}
    every = {
        key: sum(row[key] for row in totals.values())
        for key in ("n", "lethe_leaks", "unguarded_leaks")
    }
    return {"by_family": families, "all_families": _with_bound(every)}


def _with_bound(row: dict[str, int]) -> dict[str, Any]:
    n, leaks = row["n"], row["lethe_leaks"]
    return {
        **row,
        "lethe_rate": leaks / n if n else None,
        "lethe_upper_95": round(clopper_pearson_upper(leaks, n, DELTA), 5) if n else None,
        # How many attacks, none leaking, an upper bound of 1 % would take: the gap to the
        # issue's "≤ 1 % on every family".
        "attacks_for_1pct_bound": _attacks_for(0.01, leaks),
    }


def _attacks_for(rate: float, leaks: int) -> int:
    """The fewest attacks with `leaks` leaks whose upper bound is ≤ `rate`."""
    n = max(1, leaks + 1)
    while clopper_pearson_upper(leaks, n, DELTA) > rate:
        n += 1
    return n


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="bench/guard.py JSON outputs")
    args = parser.parse_args(argv)
    runs = [run for path in args.files for run in runs_of(path)]
    pooled = pool(runs)
    output = {
        "benchmark": "guard_pooled",
        "runs": [{"file": r["file"], "k": r["k"]} for r in runs],
        **pooled,
        "delta": DELTA,
        "assumption": "attacks are independent trials of one guard; they share the fine-tune "
        "and some authors across runs, and λ is calibrated per run: a bound over the "
        "conditions measured, not per k",
    }
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
