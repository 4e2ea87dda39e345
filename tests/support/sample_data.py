"""Small generated person-level tables for tests (trained in seconds)."""

from __future__ import annotations

import csv
import io

import numpy as np

CANARY_SUBJECT = "canary-7f3a9c2e@example.org"


def subject_ids(n: int) -> list[str]:
    return [f"S-{i:04d}" for i in range(n)]


def synthetic_csv(
    n_subjects: int = 80, rows_per_subject: int = 2, seed: int = 0, include_canary: bool = True
) -> bytes:
    """Columns: customer_id, age, income, region, label (two classes, learnable)."""
    rng = np.random.default_rng(seed)
    ids = subject_ids(n_subjects) + ([CANARY_SUBJECT] if include_canary else [])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["customer_id", "age", "income", "region", "label"])
    for sid in ids:
        for _ in range(rows_per_subject):
            age = int(rng.integers(18, 80))
            income = float(np.round(rng.lognormal(8, 0.6), 2))
            region = str(rng.choice(["north", "south", "east", "west"]))
            score = (
                0.04 * (age - 45) + 0.8 * (np.log(income) - 8) + (0.5 if region == "north" else 0)
            )
            label = "good" if score + rng.normal(0, 0.3) > 0 else "bad"
            writer.writerow([sid, age, income, region, label])
    return out.getvalue().encode()


MODEL_BODY = {
    "name": "tiny-credit",
    "config": {
        "subject_column": "customer_id",
        "label_column": "label",
        "holdout_fraction": 0.25,
        "sisa": {
            "shards": 3,
            "slices": 3,
            "epochs": 4,
            "hidden": [16],
            "learning_rate": 0.05,
            "batch_size": 16,
            "seed": 0,
        },
    },
    "policy": {"verify_exact": "always"},
}
