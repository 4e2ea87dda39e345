"""Training records and their fixed arrangement inside a shard (slices, order, digests)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.sisa.config import SisaConfig
from models.sisa.partition import is_validation_record
from models.slicing.checkpoints import encode_keys

__all__ = ["ShardLayout", "TrainingRecord", "encode_keys", "keys_by_slice"]


@dataclass(frozen=True, eq=False)
class TrainingRecord:
    """One training example. ``key`` must be unique and immutable: a changed record needs a new
    key, because checkpoints are addressed by keys (their contents are only cross-checked)."""

    key: str
    slice: int
    x: np.ndarray
    y: int


@dataclass(frozen=True, eq=False)
class ShardLayout:
    """A shard's records grouped by slice and sorted by key inside each slice.

    Sorting makes the training order independent of the order the caller happened to load the
    records in; ``x``/``y`` hold all records in that order, so the training set after slice ``r``
    (the union of slices ``0..r``) is the prefix ``[:ends[r]]``.
    """

    keys_by_slice: tuple[tuple[str, ...], ...]
    x: np.ndarray
    y: np.ndarray
    ends: tuple[int, ...]
    # Per slice r: a hash chained over keys, labels and features of slices 0..r. Stored in each
    # checkpoint and compared before resuming from it, so a record whose contents changed under
    # the same key can never be served from a stale checkpoint.
    content_digests: tuple[str, ...]
    # Per record (same order as x/y): held out to validate the shard instead of trained on.
    # All False under the fixed-epoch schedule.
    validation: np.ndarray

    @classmethod
    def build(cls, config: SisaConfig, records: Sequence[TrainingRecord]) -> ShardLayout:
        seen: set[str] = set()
        by_slice: list[list[TrainingRecord]] = [[] for _ in range(config.slices)]
        for record in records:
            if record.key in seen:
                raise ValueError(f"duplicate record key {record.key!r}")
            seen.add(record.key)
            if not 0 <= record.slice < config.slices:
                raise ValueError(f"record {record.key!r}: slice {record.slice} out of range")
            if not 0 <= int(record.y) < config.num_classes:
                raise ValueError(f"record {record.key!r}: label {record.y} out of range")
            by_slice[record.slice].append(record)
        ordered: list[TrainingRecord] = []
        ends: list[int] = []
        for bucket in by_slice:
            bucket.sort(key=lambda r: r.key)
            ordered.extend(bucket)
            ends.append(len(ordered))
        x = np.zeros((len(ordered), config.input_dim), dtype=np.float32)
        for i, record in enumerate(ordered):
            row = np.asarray(record.x, dtype=np.float32)
            if row.shape != (config.input_dim,):
                raise ValueError(
                    f"record {record.key!r}: x has shape {row.shape}, "
                    f"expected ({config.input_dim},)"
                )
            x[i] = row
        y = np.fromiter((int(r.y) for r in ordered), dtype=np.int64, count=len(ordered))
        keys_by_slice = tuple(tuple(r.key for r in bucket) for bucket in by_slice)
        validation = np.fromiter(
            (is_validation_record(r.key, config) for r in ordered), dtype=bool, count=len(ordered)
        )
        digests = _chained_digests(keys_by_slice, x, y, ends)
        return cls(keys_by_slice, x, y, tuple(ends), digests, validation)

    @property
    def num_records(self) -> int:
        return len(self.y)

    def start(self, slice_index: int) -> int:
        return 0 if slice_index == 0 else self.ends[slice_index - 1]

    def lineage_hash(self) -> str:
        """sha256 over the ordered record keys of the whole shard: the retained-data lineage id."""
        keys = (key for slice_keys in self.keys_by_slice for key in slice_keys)
        return hashlib.sha256(encode_keys(keys)).hexdigest()


def _chained_digests(
    keys_by_slice: Sequence[Sequence[str]], x: np.ndarray, y: np.ndarray, ends: Sequence[int]
) -> tuple[str, ...]:
    running = hashlib.sha256(b"lethe-sisa-content/v1")
    digests: list[str] = []
    lo = 0
    for keys, hi in zip(keys_by_slice, ends, strict=True):
        running.update(encode_keys(keys))
        running.update(y[lo:hi].astype("<i8").tobytes())
        running.update(x[lo:hi].astype("<f4").tobytes())
        digests.append(running.copy().hexdigest())
        lo = hi
    return tuple(digests)


def keys_by_slice(config: SisaConfig, records: Iterable[TrainingRecord]) -> list[list[str]]:
    """Each slice's record keys in training order, without building the feature matrix."""
    buckets: list[list[str]] = [[] for _ in range(config.slices)]
    for record in records:
        buckets[record.slice].append(record.key)
    for bucket in buckets:
        bucket.sort()
    return buckets
