"""Data-independent featurization of tabular records.

Exact unlearning needs every input to the retained model to be a function of the retained records
alone. A scaler, vocabulary or imputer fitted on the full table would carry statistics of erased
rows into the "retrained" model, so nothing here is fitted on data: numeric columns get a fixed
monotone squashing, categorical columns get feature hashing with a stable hash. A row's features
depend only on that row and the spec.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "KNOT_RANGE",
    "KNOT_SPACING",
    "NUMERIC_SCALE",
    "FeatureSpec",
    "featurize",
    "infer_spec",
    "is_missing",
]

# Divides signed log1p(|x|): magnitudes up to 1e6 land in [-1, 1] and larger ones grow only
# logarithmically, which keeps raw amounts, ages and counts on a trainable scale without
# looking at the data.
NUMERIC_SCALE = math.log1p(1e6)

# Thermometer knots on the signed log1p scale, one per factor of e from -e^14 to e^14: the
# squashed value alone maps ages 20..100 into [0.22, 0.33], too narrow for a small shard to
# learn from, while clip(log1p|x| - k, 0, 1) gives every factor of e its own unit-range input.
# Fixed in advance, so still nothing is fitted to the data.
KNOT_RANGE = 14.0
KNOT_SPACING = 1.0
"""The recommended knot spacing for new models (measured: flchain S=16 R=8 0.756 -> 0.791)."""


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns to use and how; the whole featurizer state (it has no fitted parameters).

    Layout of a feature vector: for each numeric column, ``[value, missing, *knots]``; then for
    each categorical column, ``hash_buckets`` one-hot slots. ``knot_spacing > 0`` adds one
    thermometer input per knot at that spacing on the signed log1p scale (``KNOT_RANGE``);
    0 (the encoding before knots existed, and what a stored spec without the field means) adds
    none. It stays the default so stored specs keep their layout; new models should ask for
    ``knot_spacing=1.0`` (``KNOT_SPACING``), which lets small shards learn from numeric columns.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    hash_buckets: int = 8
    knot_spacing: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "numeric", tuple(self.numeric))
        object.__setattr__(self, "categorical", tuple(self.categorical))
        if self.hash_buckets < 1:
            raise ValueError("hash_buckets must be at least 1")
        if not (self.knot_spacing == 0 or 0.05 <= self.knot_spacing <= KNOT_RANGE):
            raise ValueError(f"knot_spacing must be 0 or in [0.05, {KNOT_RANGE}]")
        columns = self.numeric + self.categorical
        if len(set(columns)) != len(columns):
            raise ValueError("a column may appear only once in a FeatureSpec")

    @property
    def knots(self) -> np.ndarray:
        if self.knot_spacing == 0:
            return np.zeros(0, dtype=np.float64)
        return np.arange(-KNOT_RANGE, KNOT_RANGE, self.knot_spacing, dtype=np.float64)

    @property
    def numeric_width(self) -> int:
        return 2 + len(self.knots)

    @property
    def input_dim(self) -> int:
        return self.numeric_width * len(self.numeric) + self.hash_buckets * len(self.categorical)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "hash_buckets": self.hash_buckets,
        }
        if self.knot_spacing:
            data["knot_spacing"] = self.knot_spacing
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            numeric=tuple(str(c) for c in data["numeric"]),
            categorical=tuple(str(c) for c in data["categorical"]),
            hash_buckets=int(data.get("hash_buckets", 8)),
            knot_spacing=float(data.get("knot_spacing", 0.0)),
        )


def is_missing(value: object) -> bool:
    """None, NaN (float or numpy), and empty/blank strings count as missing."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return False


def _numeric_value(column: str, value: object) -> float | None:
    """Signed log1p of the value, or None when missing; non-finite numbers count as missing."""
    if is_missing(value):
        return None
    if isinstance(value, int | float | np.integer | np.floating | np.bool_):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(
                f"column {column!r} is numeric but holds a non-numeric value"
            ) from None
    else:
        raise ValueError(f"column {column!r} is numeric but holds a {type(value).__name__}")
    if not math.isfinite(number):
        return None
    return math.copysign(math.log1p(abs(number)), number)


def _category_text(value: object) -> str:
    # Integral floats (1.0) and ints (1) name the same category, as they would after a CSV
    # round trip through pandas.
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


@lru_cache(maxsize=65536)
def _bucket(column: str, text: str, buckets: int) -> int:
    # blake2b, not hash(): Python's string hash is salted per process, which would give every
    # worker a different feature layout.
    digest = hashlib.blake2b(
        column.encode("utf-8") + b"\x1f" + text.encode("utf-8"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % buckets


def featurize(spec: FeatureSpec, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
    """Turn records into a float32 matrix of shape ``(len(rows), spec.input_dim)``.

    A column absent from a row counts as missing.
    """
    out = np.zeros((len(rows), spec.input_dim), dtype=np.float32)
    width, knots = spec.numeric_width, spec.knots
    categorical_offset = width * len(spec.numeric)
    for i, row in enumerate(rows):
        for j, column in enumerate(spec.numeric):
            value = _numeric_value(column, row.get(column))
            if value is None:
                out[i, width * j + 1] = 1.0
            else:
                out[i, width * j] = value / NUMERIC_SCALE
                if len(knots):
                    thermometer = np.clip((value - knots) / spec.knot_spacing, 0.0, 1.0)
                    out[i, width * j + 2 : width * (j + 1)] = thermometer
        for j, column in enumerate(spec.categorical):
            raw = row.get(column)
            if is_missing(raw):
                continue
            slot = _bucket(column, _category_text(raw), spec.hash_buckets)
            out[i, categorical_offset + j * spec.hash_buckets + slot] = 1.0
    return out


def _is_numeric_value(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating | np.bool_)


def infer_spec(
    frame_or_rows: Any,
    exclude: Iterable[str] = (),
    *,
    hash_buckets: int = 8,
    knot_spacing: float = 0.0,
) -> FeatureSpec:
    """A FeatureSpec from column *types* only (numeric dtype → numeric, else categorical).

    Accepts a pandas DataFrame (duck-typed through ``.columns``/``.dtypes``, so pandas is not a
    dependency of this module) or a sequence of mappings. No statistic of the values is used.
    """
    excluded = set(exclude)
    numeric: list[str] = []
    categorical: list[str] = []
    if hasattr(frame_or_rows, "columns") and hasattr(frame_or_rows, "dtypes"):
        for column, dtype in zip(frame_or_rows.columns, frame_or_rows.dtypes, strict=True):
            name = str(column)
            if name in excluded:
                continue
            # pandas extension dtypes expose numpy's kind codes too (Int64 → "i", string → "O").
            is_numeric = getattr(dtype, "kind", "O") in "biuf"
            (numeric if is_numeric else categorical).append(name)
    else:
        rows: Sequence[Mapping[str, object]] = frame_or_rows
        order: dict[str, bool] = {}
        for row in rows:
            for column, value in row.items():
                name = str(column)
                if name in excluded:
                    continue
                if name not in order:
                    order[name] = True
                if not is_missing(value) and not _is_numeric_value(value):
                    order[name] = False
        for name, is_numeric in order.items():
            (numeric if is_numeric else categorical).append(name)
    return FeatureSpec(tuple(numeric), tuple(categorical), hash_buckets, knot_spacing)
