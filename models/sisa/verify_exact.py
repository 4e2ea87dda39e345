"""End-to-end exactness experiment on any CSV: train, erase subjects, check bit for bit.

This is what ``lethe verify-exact`` runs. One CSV row is one record (its key is the row
number); the subject column says whose record it is, the label column is the class, every other
column is a feature (featurized without fitting anything to the data).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.artifacts import LocalArtifactStore
from models.sisa.config import DEFAULT_SLICES, SisaConfig, default_shards
from models.sisa.ensemble import Ensemble
from models.sisa.exactness import verify_bit_exact
from models.sisa.manifest import Manifest
from models.sisa.partition import assign_shard, assign_slice
from models.sisa.records import TrainingRecord
from models.sisa.training import ShardTrainingResult, train_shard
from models.sisa.unlearning import unlearn
from models.tabular import KNOT_SPACING, featurize, infer_spec

__all__ = ["run_verify_exact", "subject_ref"]

# (stage, done, total); stages: "train", "unlearn", "verify", "full-retrain".
StageProgress = Callable[[str, int, int], None]


def subject_ref(value: str) -> str:
    """The pseudonymous reference used in place of a raw subject identifier."""
    return hashlib.sha256(b"lethe-subject\x1f" + value.encode("utf-8")).hexdigest()


def _holdout_subjects(
    refs: Sequence[str], protected: set[str], fraction: float, seed: int
) -> set[str]:
    # Ranking by a seeded hash picks a fixed-size random subset that does not depend on row
    # order; subjects to be forgotten must stay in training, or there is nothing to erase.
    eligible = sorted(
        (r for r in set(refs) if r not in protected),
        key=lambda r: hashlib.sha256(f"holdout\x1f{seed}\x1f{r}".encode()).hexdigest(),
    )
    count = max(1, round(fraction * len(eligible)))
    if count >= len(eligible):
        raise ValueError("too few subjects to hold out some and still train on the rest")
    return set(eligible[:count])


def _train_all(
    config: SisaConfig,
    shard_records: Mapping[int, Sequence[TrainingRecord]],
    store: LocalArtifactStore,
    *,
    use_cache: bool,
    stage: str,
    progress: StageProgress | None,
) -> tuple[Manifest, list[ShardTrainingResult]]:
    results = []
    for shard in range(config.shards):
        if progress is not None:
            progress(stage, shard, config.shards)
        results.append(
            train_shard(config, shard, shard_records.get(shard, []), store, use_cache=use_cache)
        )
    if progress is not None:
        progress(stage, config.shards, config.shards)
    return Manifest.from_results(results), results


def run_verify_exact(
    csv_path: str | Path,
    subject_column: str,
    label_column: str,
    shards: int | None,
    slices: int | None,
    forget: list[str],
    *,
    epochs: int | None = None,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    progress: StageProgress | None = None,
) -> dict[str, Any]:
    """Train a SISA ensemble on the CSV, erase the ``forget`` subjects, and check every
    retrained shard bit for bit against training from scratch on the retained records.

    ``shards=None`` picks ``default_shards`` of the training rows (one shard per
    ``RECORDS_PER_SHARD`` records, at most 16) and ``slices=None`` ``DEFAULT_SLICES``: the
    defaults that keep the ensemble near one model (README, "What the defaults do").

    ``epochs=None`` (the default) trains with early stopping on each shard's own validation
    records (``SisaConfig``'s defaults), which converges without tuning; an integer asks for
    the fixed schedule of that many epochs instead, as before early stopping existed.

    Returns ``bit_exact``, ``shards_retrained``, ``retrain_seconds``, ``full_retrain_seconds``
    (all shards retrained from scratch on the retained data, measured), ``accuracy_before`` and
    ``accuracy_after`` (on held-out subjects), ``majority_class_accuracy`` (always answering
    the most common training label, on the same subjects: the bar a model must clear),
    ``schedule`` and ``shards_too_small`` (shard number → why it cannot be shown to have
    learned anything). Subject values are hashed on reading and never appear in results or
    error messages.
    """
    import pandas as pd

    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be between 0 and 1")
    if subject_column == label_column:
        raise ValueError("the subject column and the label column must differ")
    if not forget:
        raise ValueError("name at least one subject to forget")
    header = list(pd.read_csv(csv_path, nrows=0).columns)
    for column in (subject_column, label_column):
        if column not in header:
            raise ValueError(f"unknown column {column!r}; the CSV has {header}")
    frame = pd.read_csv(csv_path, dtype={subject_column: str, label_column: str})
    if frame[subject_column].isna().any():
        raise ValueError(f"column {subject_column!r} has rows without a subject")
    if frame[label_column].isna().any():
        raise ValueError(f"column {label_column!r} has rows without a label")

    refs = [subject_ref(value) for value in frame[subject_column]]
    forget_refs = {subject_ref(value) for value in forget}
    known = set(refs)
    for position, value in enumerate(forget, start=1):
        if subject_ref(value) not in known:
            raise ValueError(
                f"forget subject #{position} of {len(forget)} does not occur in column "
                f"{subject_column!r}"
            )
    held_out = _holdout_subjects(refs, forget_refs, holdout_fraction, seed)

    class_names = sorted(set(frame[label_column]))
    label_index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([label_index[name] for name in frame[label_column]], dtype=np.int64)
    features = frame.drop(columns=[subject_column, label_column])
    spec = infer_spec(features, knot_spacing=KNOT_SPACING)
    x = featurize(spec, features.to_dict("records"))

    training_rows = sum(1 for ref in refs if ref not in held_out)
    config = SisaConfig(
        shards=default_shards(training_rows) if shards is None else shards,
        slices=DEFAULT_SLICES if slices is None else slices,
        input_dim=spec.input_dim,
        num_classes=max(2, len(class_names)),
        seed=seed,
    )
    if epochs is not None:
        config = config.replace(epochs=epochs, validation_fraction=0.0)
    shard_records: dict[int, list[TrainingRecord]] = {}
    erase_keys: list[str] = []
    holdout_rows: list[int] = []
    for row, ref in enumerate(refs):
        if ref in held_out:
            holdout_rows.append(row)
            continue
        key = str(row)
        record = TrainingRecord(key, assign_slice(key, config), x[row], int(labels[row]))
        shard_records.setdefault(assign_shard(ref, config), []).append(record)
        if ref in forget_refs:
            erase_keys.append(key)
    holdout_x, holdout_y = x[holdout_rows], labels[holdout_rows]
    train_labels = np.delete(labels, holdout_rows)
    majority_label = int(np.bincount(train_labels, minlength=config.num_classes).argmax())

    with tempfile.TemporaryDirectory(prefix="lethe-verify-exact-") as scratch:
        store = LocalArtifactStore(Path(scratch))
        manifest, trained = _train_all(
            config, shard_records, store, use_cache=True, stage="train", progress=progress
        )
        accuracy_before = Ensemble.load(config, manifest, store).accuracy(holdout_x, holdout_y)

        if progress is not None:
            progress("unlearn", 0, 1)
        result = unlearn(config, shard_records, erase_keys, store, manifest)
        if progress is not None:
            progress("unlearn", 1, 1)

        checks = []
        for done, (shard, outcome) in enumerate(sorted(result.shards.items())):
            if progress is not None:
                progress("verify", done, len(result.shards))
            checks.append(
                verify_bit_exact(
                    config, shard, result.retained_records[shard], outcome.checkpoint_after, store
                )
            )
        if progress is not None:
            progress("verify", len(result.shards), len(result.shards))

        retained = {
            shard: result.retained_records.get(shard, records)
            for shard, records in shard_records.items()
        }
        started = time.perf_counter()
        _train_all(
            config, retained, store, use_cache=False, stage="full-retrain", progress=progress
        )
        full_retrain_seconds = time.perf_counter() - started
        accuracy_after = Ensemble.load(config, result.manifest, store).accuracy(
            holdout_x, holdout_y
        )

    return {
        "bit_exact": bool(checks) and all(check.bit_exact for check in checks),
        "shards": config.shards,
        "slices": config.slices,
        "shards_retrained": len(result.shards),
        "retrain_seconds": result.seconds,
        "full_retrain_seconds": full_retrain_seconds,
        "accuracy_before": accuracy_before,
        "accuracy_after": accuracy_after,
        "majority_class_accuracy": float((holdout_y == majority_label).mean()),
        "schedule": "early_stopping" if config.early_stopping else f"fixed, {epochs} epochs",
        "shards_too_small": {str(r.shard): r.too_small for r in trained if r.too_small},
    }
