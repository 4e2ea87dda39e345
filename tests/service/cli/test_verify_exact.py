"""``lethe verify-exact``'s experiment on a CSV file: erasing subjects is bit exact, and an unknown
column or subject is a clear error that does not quote the subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from service.cli.verify_exact import run_verify_exact


def write_csv(path: Path, rows: int = 240, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(8, 1, rows)
    city = rng.choice(["north", "south", "east"], rows)
    score = rng.normal(size=rows) + (city == "north")
    frame = pd.DataFrame(
        {
            "customer": [f"cust-{i // 2}" for i in range(rows)],  # two records per subject
            "income": income,
            "city": city,
            "score": np.where(rng.random(rows) < 0.05, np.nan, score),
            "approved": np.where(score + 0.3 * np.log(income) > 3.0, "yes", "no"),
        }
    )
    frame.to_csv(path, index=False)
    return path


def test_erasing_subjects_is_bit_exact(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "data.csv")
    result = run_verify_exact(
        csv, "customer", "approved", 3, 4, ["cust-3", "cust-50", "cust-77"], epochs=4
    )
    assert set(result) == {
        "bit_exact",
        "shards",
        "slices",
        "shards_retrained",
        "retrain_seconds",
        "full_retrain_seconds",
        "accuracy_before",
        "accuracy_after",
        "majority_class_accuracy",
        "schedule",
        "shards_too_small",
    }
    assert result["bit_exact"] is True
    assert (result["shards"], result["slices"]) == (3, 4)
    assert 1 <= result["shards_retrained"] <= 3
    assert result["retrain_seconds"] > 0 and result["full_retrain_seconds"] > 0
    assert 0.5 <= result["accuracy_before"] <= 1 and 0.5 <= result["accuracy_after"] <= 1


def test_unknown_column_and_subject_are_clear_errors(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "data.csv", rows=40)
    with pytest.raises(ValueError, match="unknown column 'nope'"):
        run_verify_exact(csv, "nope", "approved", 2, 2, ["cust-1"], epochs=1)
    with pytest.raises(ValueError) as error:
        run_verify_exact(csv, "customer", "approved", 2, 2, ["cust-1", "secret-person"], epochs=1)
    assert "#2" in str(error.value)
    assert "secret-person" not in str(error.value)
