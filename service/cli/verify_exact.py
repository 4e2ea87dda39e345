"""``lethe verify-exact``: the end-to-end exactness experiment on any CSV.

One CSV row is one record (its key is the row number); the subject column says whose record it
is, the label column is the class, every other column is a feature (featurized without fitting
anything to the data). A seeded fraction of the subjects is held out to measure accuracy before
and after the erasure; the ML work is ``models.sisa.verify_exact``'s, and this module reads the
CSV, times the comparison with a full retrain and assembles the JSON the command prints.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.artifacts import ArtifactStore, LocalArtifactStore
from models.sisa.config import DEFAULT_SLICES, SisaConfig, default_shards
from models.sisa.ensemble import Ensemble
from models.sisa.manifest import Manifest
from models.sisa.partition import assign_shard, assign_slice
from models.sisa.records import TrainingRecord
from models.sisa.verify_exact import (
    ExactErasureOutcome,
    TrainedEnsemble,
    erase_and_verify,
    train_all_shards,
)
from models.tabular import KNOT_SPACING, featurize, infer_spec

__all__ = ["run_verify_exact", "subject_ref"]

# (stage, done, total); stages: "train", "unlearn", "verify", "full-retrain".
StageProgress = Callable[[str, int, int], None]


def subject_ref(value: str) -> str:
    """The pseudonymous reference used in place of a raw subject identifier."""
    return hashlib.sha256(b"lethe-subject\x1f" + value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Table:
    """The CSV's rows as the experiment uses them; subjects only as references."""

    refs: list[str]
    """Row → its subject's reference."""
    class_names: list[str]
    labels: np.ndarray
    """Row → index of its label in ``class_names``."""
    x: np.ndarray
    input_dim: int


@dataclass(frozen=True)
class _Experiment:
    config: SisaConfig
    shard_records: dict[int, list[TrainingRecord]]
    erase_keys: list[str]
    holdout_x: np.ndarray
    holdout_y: np.ndarray
    majority_label: int
    """The most common label among the training rows."""


@dataclass(frozen=True)
class _Measured:
    trained: TrainedEnsemble
    erasure: ExactErasureOutcome
    accuracy_before: float
    accuracy_after: float
    full_retrain_seconds: float


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
    _check_arguments(subject_column, label_column, forget, holdout_fraction)
    frame = _read_csv(csv_path, subject_column, label_column)
    refs = [subject_ref(value) for value in frame[subject_column]]
    forget_refs = _forget_refs(refs, forget, subject_column)
    held_out = _holdout_subjects(refs, forget_refs, holdout_fraction, seed)
    table = _table(frame, refs, subject_column, label_column)
    training_rows = sum(1 for ref in refs if ref not in held_out)
    config = _config(table, training_rows, shards, slices, epochs, seed)
    experiment = _experiment(config, table, held_out, forget_refs)
    with tempfile.TemporaryDirectory(prefix="lethe-verify-exact-") as scratch:
        measured = _measure(experiment, LocalArtifactStore(Path(scratch)), progress)
    return _report(experiment, measured, epochs)


def _check_arguments(
    subject_column: str, label_column: str, forget: Sequence[str], holdout_fraction: float
) -> None:
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be between 0 and 1")
    if subject_column == label_column:
        raise ValueError("the subject column and the label column must differ")
    if not forget:
        raise ValueError("name at least one subject to forget")


def _read_csv(csv_path: str | Path, subject_column: str, label_column: str) -> pd.DataFrame:
    """The CSV with subject and label read as text; every row must have both."""
    # The header alone first: a wrong column name is reported without reading the whole file.
    header = list(pd.read_csv(csv_path, nrows=0).columns)
    for column in (subject_column, label_column):
        if column not in header:
            raise ValueError(f"unknown column {column!r}; the CSV has {header}")
    frame = pd.read_csv(csv_path, dtype={subject_column: str, label_column: str})
    if frame[subject_column].isna().any():
        raise ValueError(f"column {subject_column!r} has rows without a subject")
    if frame[label_column].isna().any():
        raise ValueError(f"column {label_column!r} has rows without a label")
    return frame


def _forget_refs(refs: Sequence[str], forget: Sequence[str], subject_column: str) -> set[str]:
    """References of the subjects to forget; each must occur in the CSV. The error names a
    subject by its position in ``forget``, never by its value."""
    known = set(refs)
    for position, value in enumerate(forget, start=1):
        if subject_ref(value) not in known:
            raise ValueError(
                f"forget subject #{position} of {len(forget)} does not occur in column "
                f"{subject_column!r}"
            )
    return {subject_ref(value) for value in forget}


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


def _table(frame: pd.DataFrame, refs: list[str], subject_column: str, label_column: str) -> _Table:
    class_names = sorted(set(frame[label_column]))
    label_index = {name: i for i, name in enumerate(class_names)}
    labels = np.array([label_index[name] for name in frame[label_column]], dtype=np.int64)
    features = frame.drop(columns=[subject_column, label_column])
    spec = infer_spec(features, knot_spacing=KNOT_SPACING)
    x = featurize(spec, features.to_dict("records"))
    return _Table(refs, class_names, labels, x, spec.input_dim)


def _config(
    table: _Table,
    training_rows: int,
    shards: int | None,
    slices: int | None,
    epochs: int | None,
    seed: int,
) -> SisaConfig:
    config = SisaConfig(
        shards=default_shards(training_rows) if shards is None else shards,
        slices=DEFAULT_SLICES if slices is None else slices,
        input_dim=table.input_dim,
        num_classes=max(2, len(table.class_names)),
        seed=seed,
    )
    if epochs is not None:
        config = config.replace(epochs=epochs, validation_fraction=0.0)
    return config


def _experiment(
    config: SisaConfig, table: _Table, held_out: set[str], forget_refs: set[str]
) -> _Experiment:
    """Training rows placed in shards and slices (a row's key is its number), the keys to
    erase, and the held-out rows."""
    shard_records: dict[int, list[TrainingRecord]] = {}
    erase_keys: list[str] = []
    holdout_rows: list[int] = []
    for row, ref in enumerate(table.refs):
        if ref in held_out:
            holdout_rows.append(row)
            continue
        key = str(row)
        record = TrainingRecord(
            key, assign_slice(key, config), table.x[row], int(table.labels[row])
        )
        shard_records.setdefault(assign_shard(ref, config), []).append(record)
        if ref in forget_refs:
            erase_keys.append(key)
    train_labels = np.delete(table.labels, holdout_rows)
    majority_label = int(np.bincount(train_labels, minlength=config.num_classes).argmax())
    return _Experiment(
        config,
        shard_records,
        erase_keys,
        table.x[holdout_rows],
        table.labels[holdout_rows],
        majority_label,
    )


def _measure(
    experiment: _Experiment, store: ArtifactStore, progress: StageProgress | None
) -> _Measured:
    """Train, erase and verify; then retrain every shard from scratch on the retained records,
    timed: the cost that erasing by slice retraining avoids."""
    config = experiment.config
    trained = train_all_shards(
        config, experiment.shard_records, store, progress=_stage(progress, "train")
    )
    accuracy_before = _accuracy(experiment, trained.manifest, store)
    erasure = erase_and_verify(
        config,
        experiment.shard_records,
        experiment.erase_keys,
        store,
        trained.manifest,
        progress=progress,
    )
    retained = _retained(experiment.shard_records, erasure)
    started = time.perf_counter()
    train_all_shards(
        config, retained, store, use_cache=False, progress=_stage(progress, "full-retrain")
    )
    full_retrain_seconds = time.perf_counter() - started
    accuracy_after = _accuracy(experiment, erasure.unlearning.manifest, store)
    return _Measured(trained, erasure, accuracy_before, accuracy_after, full_retrain_seconds)


def _stage(progress: StageProgress | None, stage: str) -> Callable[[int, int], None] | None:
    return None if progress is None else partial(progress, stage)


def _accuracy(experiment: _Experiment, manifest: Manifest, store: ArtifactStore) -> float:
    ensemble = Ensemble.load(experiment.config, manifest, store)
    return ensemble.accuracy(experiment.holdout_x, experiment.holdout_y)


def _retained(
    shard_records: Mapping[int, list[TrainingRecord]], erasure: ExactErasureOutcome
) -> dict[int, list[TrainingRecord]]:
    """Every shard's records after the erasure (shards that held no erased record: unchanged)."""
    after = erasure.unlearning.retained_records
    return {shard: after.get(shard, records) for shard, records in shard_records.items()}


def _report(experiment: _Experiment, measured: _Measured, epochs: int | None) -> dict[str, Any]:
    """The JSON ``lethe verify-exact`` prints (keys in this order)."""
    config, unlearning = experiment.config, measured.erasure.unlearning
    majority = float((experiment.holdout_y == experiment.majority_label).mean())
    return {
        "bit_exact": measured.erasure.bit_exact,
        "shards": config.shards,
        "slices": config.slices,
        "shards_retrained": len(unlearning.shards),
        "retrain_seconds": unlearning.seconds,
        "full_retrain_seconds": measured.full_retrain_seconds,
        "accuracy_before": measured.accuracy_before,
        "accuracy_after": measured.accuracy_after,
        "majority_class_accuracy": majority,
        "schedule": "early_stopping" if config.early_stopping else f"fixed, {epochs} epochs",
        "shards_too_small": {
            str(shard): why for shard, why in measured.trained.shards_too_small.items()
        },
    }
