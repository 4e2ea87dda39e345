"""The CLI: `lethe verify-exact` on a CSV, as an ML engineer would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.sample_data import synthetic_csv


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=600
    )


def _forget(tmp_path: Path, *subjects: str) -> str:
    """The subjects to erase, in a file: never on the command line."""
    path = tmp_path / "forget.txt"
    path.write_text("\n".join(subjects) + "\n")
    return str(path)


def test_verify_exact_on_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(synthetic_csv(n_subjects=60, rows_per_subject=2))
    result = _run(
        "verify-exact",
        "--csv",
        str(path),
        "--subject-column",
        "customer_id",
        "--label-column",
        "label",
        "--shards",
        "3",
        "--slices",
        "3",
        "--epochs",
        "3",
        "--forget-file",
        _forget(tmp_path, "S-0003", "S-0010"),
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["bit_exact"] is True
    assert 1 <= out["shards_retrained"] <= 2
    assert out["retrain_seconds"] > 0 and out["full_retrain_seconds"] > 0
    for key in ("accuracy_before", "accuracy_after"):
        assert 0.0 <= out[key] <= 1.0


def test_verify_exact_converges_by_default(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(synthetic_csv(n_subjects=60, rows_per_subject=2))
    result = _run(
        "verify-exact",
        "--csv",
        str(path),
        "--subject-column",
        "customer_id",
        "--label-column",
        "label",
        "--shards",
        "2",
        "--slices",
        "2",
        "--forget-file",
        _forget(tmp_path, "S-0003"),
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["schedule"] == "early_stopping" and out["bit_exact"] is True
    assert "shards_too_small" in out and "majority_class_accuracy" in out


def test_verify_exact_rejects_unknown_subject_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(synthetic_csv(n_subjects=20))
    result = _run(
        "verify-exact",
        "--csv",
        str(path),
        "--subject-column",
        "customer_id",
        "--label-column",
        "label",
        "--forget-file",
        _forget(tmp_path, "secret-person-42"),
    )
    assert result.returncode == 2
    assert "secret-person-42" not in result.stderr + result.stdout
