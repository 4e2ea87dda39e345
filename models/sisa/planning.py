"""Choosing (S, R) per model: measure the accuracy/speed-up frontier on the model's own data.

More shards make a request cheaper (it retrains one shard of S) but give each shard less data;
more slices make the restart later but cost checkpoints. ``plan_sisa`` trains a few candidate
(S, R) on a deterministic subsample of the records it is given, measures each one's held-out
accuracy against one model trained on the same records, estimates each one's expected
per-request speed-up from the training work it actually measured, and proposes the fastest
within an accuracy budget. It reads only the records passed in, skipping ``erased_keys``
before touching their contents, so erased rows can never shape the proposal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.sisa.baseline import single_model_baseline
from models.sisa.config import SisaConfig
from models.sisa.ensemble import Ensemble
from models.sisa.partition import assign_shard, assign_slice
from models.sisa.records import TrainingRecord
from models.sisa.training import ShardTrainingResult, train_shard_in_memory

__all__ = [
    "DEFAULT_CANDIDATES",
    "FrontierPoint",
    "SisaPlan",
    "SubjectRecord",
    "expected_request_speedup",
    "plan_sisa",
]

DEFAULT_CANDIDATES: tuple[tuple[int, int], ...] = (
    (2, 4),
    (4, 4),
    (4, 8),
    (8, 4),
    (8, 8),
    (16, 8),
    (32, 8),
)

# (stage, done, total): "one_model" then "S=<s>,R=<r>" per candidate.
PlanProgress = Callable[[str, int, int], None]


@dataclass(frozen=True, eq=False)
class SubjectRecord:
    """A record with its subject (for shard placement) and its ingestion flag."""

    subject_ref: str
    key: str
    x: np.ndarray
    y: int
    likely_erased: bool = False


@dataclass(frozen=True)
class FrontierPoint:
    shards: int
    slices: int
    accuracy: float
    per_request_speedup: float
    accuracy_gap_points: float
    """Points (percent) below one model; negative: above it."""
    accuracy_gap_se_points: float
    """Standard error of that gap (paired: both are judged on the same test records, so only
    the records they disagree on count). A gap within about two of these of the budget is
    within the subsample's noise."""
    within_budget: bool
    shards_too_small: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SisaPlan:
    one_model_accuracy: float
    frontier: list[FrontierPoint]
    chosen: FrontierPoint
    """The largest speed-up within the budget; if none is within it, the most accurate."""
    budget_points: float
    erasure_rate: float
    requests_per_retrain: int
    training_records: int
    test_records: int

    @property
    def within_budget(self) -> bool:
        return self.chosen.within_budget

    def config(self, base: SisaConfig) -> SisaConfig:
        return base.replace(shards=self.chosen.shards, slices=self.chosen.slices)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["within_budget"] = self.within_budget
        return data


def _rank(salt: str, text: str) -> bytes:
    return hashlib.sha256(f"lethe-plan\x1f{salt}\x1f{text}".encode()).digest()


def _subsample(
    records: Sequence[SubjectRecord], salt: str, max_records: int, test_fraction: float
) -> tuple[list[SubjectRecord], list[SubjectRecord]]:
    """Whole subjects in an order fixed by a keyed hash (not by input order), until
    ``max_records``; a hash of the subject also decides train or test."""
    by_subject: dict[str, list[SubjectRecord]] = {}
    for record in records:
        by_subject.setdefault(record.subject_ref, []).append(record)
    train: list[SubjectRecord] = []
    test: list[SubjectRecord] = []
    for subject in sorted(by_subject, key=lambda s: _rank(salt, s)):
        if len(train) + len(test) >= max_records:
            break
        members = sorted(by_subject[subject], key=lambda r: r.key)
        in_test = int.from_bytes(_rank(salt, "test\x1f" + subject)[:8], "big") < test_fraction * (
            2**64
        )
        (test if in_test else train).extend(members)
    return train, test


def expected_request_speedup(
    config: SisaConfig,
    results: Sequence[ShardTrainingResult],
    erasure_mass: Sequence[Sequence[float]],
    requests_per_retrain: int,
) -> float:
    """Full retrain work / expected work per request, when ``requests_per_retrain`` requests
    are coalesced into one retrain (each affected shard retrains once, from its first affected
    slice). ``erasure_mass[s][k]``: likelihood that a request hits slice ``k`` of shard ``s``.
    """
    total_mass = sum(sum(row) for row in erasure_mass)
    full_work = sum(sum(r.work_by_slice) for r in results)
    if total_mass <= 0 or full_work <= 0:
        return 0.0
    k = requests_per_retrain
    expected = 0.0
    for result in results:
        work = result.work_by_slice
        mass = [m / total_mass for m in erasure_mass[result.shard]]
        before = 0.0
        for slice_index in range(config.slices):
            through = before + mass[slice_index]
            # P(no request in slices < k of this shard) - P(none in slices <= k).
            p_first = (1 - before) ** k - (1 - through) ** k
            expected += p_first * sum(work[slice_index:])
            before = through
    return full_work * k / expected if expected > 0 else float("inf")


def _evaluate(
    config: SisaConfig,
    train: Sequence[SubjectRecord],
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    flagged_erasure_odds: float,
    requests_per_retrain: int,
) -> tuple[np.ndarray, float, int]:
    """(test predictions, per-request speed-up, shards too small) of one candidate."""
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(config.shards)}
    mass = [[0.0] * config.slices for _ in range(config.shards)]
    for record in train:
        shard = assign_shard(record.subject_ref, config)
        slice_index = assign_slice(record.key, config, likely_erased=record.likely_erased)
        by_shard[shard].append(TrainingRecord(record.key, slice_index, record.x, record.y))
        mass[shard][slice_index] += flagged_erasure_odds if record.likely_erased else 1.0
    trained = [train_shard_in_memory(config, s, by_shard[s]) for s in range(config.shards)]
    members = {
        t.result.shard: t.model for t in trained if t.result.too_small != "no training records"
    }
    predictions = Ensemble(config, members).predict(test_x)
    results = [t.result for t in trained]
    speedup = expected_request_speedup(config, results, mass, requests_per_retrain)
    return predictions, speedup, sum(1 for r in results if r.too_small)


def _paired_gap(
    one_model: np.ndarray, candidate: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """(gap, its standard error) in points, from per-record correctness of both models."""
    difference = (one_model == labels).astype(np.float64) - (candidate == labels)
    n = len(labels)
    se = float(np.sqrt(max(difference.var(ddof=1), 0.0) / n)) if n > 1 else float("inf")
    return 100.0 * float(difference.mean()), 100.0 * se


@dataclass(frozen=True)
class _PlanData:
    """The retained records' subsample a plan is measured on."""

    train: list[SubjectRecord]
    test: list[SubjectRecord]
    test_x: np.ndarray
    test_y: np.ndarray
    requests_per_retrain: int


def _plan_data(
    base: SisaConfig,
    records: Sequence[SubjectRecord],
    erased_keys: Collection[str],
    *,
    max_records: int,
    test_fraction: float,
    erasure_rate: float,
) -> _PlanData:
    erased = set(erased_keys)
    # Filter on the key alone, before anything reads an erased record's features or label.
    retained = [r for r in records if r.key not in erased]
    train, test = _subsample(retained, base.partition_salt, max_records, test_fraction)
    if not train or not test:
        raise ValueError("too few records to plan: need some to train and some to test on")
    test_x = np.stack([np.asarray(r.x, dtype=np.float32) for r in test])
    test_y = np.array([r.y for r in test], dtype=np.int64)
    requests = max(1, round(erasure_rate * len(retained)))
    return _PlanData(train, test, test_x, test_y, requests)


def _one_model_predictions(base: SisaConfig, data: _PlanData) -> np.ndarray:
    """Test predictions of one model trained on all the training records: the bar."""
    return single_model_baseline(
        base,
        np.stack([np.asarray(r.x, dtype=np.float32) for r in data.train]),
        np.array([r.y for r in data.train], dtype=np.int64),
        keys=[r.key for r in data.train],
    ).predict(data.test_x)


@dataclass(frozen=True)
class _Scoring:
    """How a candidate is scored against one model (``plan_sisa``'s arguments)."""

    budget_points: float
    se_margin: float
    flagged_erasure_odds: float


def _frontier_point(
    config: SisaConfig, data: _PlanData, one_model_predictions: np.ndarray, scoring: _Scoring
) -> FrontierPoint:
    predictions, speedup, too_small = _evaluate(
        config,
        data.train,
        data.test_x,
        data.test_y,
        flagged_erasure_odds=scoring.flagged_erasure_odds,
        requests_per_retrain=data.requests_per_retrain,
    )
    accuracy = float((predictions == data.test_y).mean())
    gap, gap_se = _paired_gap(one_model_predictions, predictions, data.test_y)
    return FrontierPoint(
        config.shards,
        config.slices,
        accuracy,
        speedup,
        gap,
        gap_se,
        gap + scoring.se_margin * gap_se <= scoring.budget_points,
        too_small,
    )


def _choose(points: Sequence[FrontierPoint]) -> FrontierPoint:
    """The largest speed-up within the budget; if none is within it, the most accurate."""
    inside = [p for p in points if p.within_budget]
    if inside:
        return max(inside, key=lambda p: (p.per_request_speedup, p.accuracy, -p.shards))
    return max(points, key=lambda p: (p.accuracy, p.per_request_speedup))


def plan_sisa(
    base: SisaConfig,
    records: Sequence[SubjectRecord],
    *,
    candidates: Sequence[tuple[int, int]] = DEFAULT_CANDIDATES,
    budget_points: float = 1.0,
    se_margin: float = 0.0,
    erasure_rate: float = 0.001,
    flagged_erasure_odds: float = 1.0,
    max_records: int = 20_000,
    test_fraction: float = 0.2,
    erased_keys: Collection[str] = (),
    progress: PlanProgress | None = None,
) -> SisaPlan:
    """Propose (S, R) for a model: the largest expected per-request speed-up among
    ``candidates`` whose held-out accuracy is at most ``budget_points`` below one model.

    ``base`` supplies everything but S and R (network, schedule, seed, salt, tail slices).
    A candidate is within budget when ``gap + se_margin * se <= budget_points``: with the
    default 0 the point estimate decides; 1 or 2 guard against a small subsample's noise (on
    a few thousand records the gap's standard error is about a point).
    ``erasure_rate`` is the expected fraction of the model's records erased per retrain (so
    ``max(1, round(rate * len(records)))`` requests are coalesced into one retrain).
    Deterministic: the same records (in any order) give the same plan.
    """
    if not candidates:
        raise ValueError("give at least one candidate (S, R)")
    data = _plan_data(
        base,
        records,
        erased_keys,
        max_records=max_records,
        test_fraction=test_fraction,
        erasure_rate=erasure_rate,
    )
    total = len(candidates) + 1
    if progress is not None:
        progress("one_model", 0, total)
    one_model_predictions = _one_model_predictions(base, data)
    scoring = _Scoring(budget_points, se_margin, flagged_erasure_odds)
    points: list[FrontierPoint] = []
    for done, (shards, slices) in enumerate(candidates, start=1):
        if progress is not None:
            progress(f"S={shards},R={slices}", done, total)
        config = base.replace(shards=shards, slices=slices)
        points.append(_frontier_point(config, data, one_model_predictions, scoring))
    if progress is not None:
        progress("done", total, total)
    return SisaPlan(
        one_model_accuracy=float((one_model_predictions == data.test_y).mean()),
        frontier=points,
        chosen=_choose(points),
        budget_points=budget_points,
        erasure_rate=erasure_rate,
        requests_per_retrain=data.requests_per_retrain,
        training_records=len(data.train),
        test_records=len(data.test),
    )
