"""bench/guard_pooled.py: attacks summed per family over runs, with their exact bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.guard_pooled import main, pool, runs_of
from models.conformal.pvalues import clopper_pearson_upper


def _run_file(tmp_path: Path, name: str, by_k: dict[str, dict[str, dict[str, float]]]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"attack_leak_rate_by_family": by_k, "other": 1}))
    return path


def _family(n: int, leaks: int, unguarded: float) -> dict[str, float]:
    return {"n": n, "lethe_leaks": leaks, "lethe": leaks / n, "unguarded": unguarded}


def test_runs_are_pooled_per_family_with_an_exact_bound(tmp_path: Path) -> None:
    a = _run_file(tmp_path, "a.json", {"1": {"direct": _family(4, 0, 1.0)}})
    b = _run_file(
        tmp_path,
        "b.json",
        {"5": {"direct": _family(6, 1, 0.5), "indirect": _family(4, 0, 0.25)}},
    )
    runs = [*runs_of(a), *runs_of(b)]
    assert [(r["file"], r["k"]) for r in runs] == [("a.json", "1"), ("b.json", "5")]
    pooled = pool(runs)
    direct = pooled["by_family"]["direct"]
    assert (direct["n"], direct["lethe_leaks"], direct["unguarded_leaks"]) == (10, 1, 7)
    assert direct["lethe_upper_95"] == pytest.approx(clopper_pearson_upper(1, 10, 0.05), abs=1e-5)
    every = pooled["all_families"]
    assert (every["n"], every["lethe_leaks"], every["unguarded_leaks"]) == (14, 1, 8)
    # 0 leaks bound a rate by 1 % at 95 % only from 299 attacks on (1 - 0.99^n <= 0.95).
    assert pooled["by_family"]["indirect"]["attacks_for_1pct_bound"] == 299
    assert 0.99**299 <= 0.05 < 0.99**298


def test_the_script_prints_the_pooled_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _run_file(tmp_path, "a.json", {"20": {"misspelt": _family(5, 0, 0.8)}})
    main([str(path)])
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "guard_pooled"
    assert out["by_family"]["misspelt"]["lethe_upper_95"] == pytest.approx(
        1 - 0.05 ** (1 / 5), abs=1e-5
    )
