"""The data-independent featurizer."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.tabular import NUMERIC_SCALE, FeatureSpec, featurize, infer_spec

SPEC = FeatureSpec(numeric=("age", "income"), categorical=("home", "job"), hash_buckets=4)

ROWS: list[dict[str, object]] = [
    {"age": 30, "income": 1500.0, "home": "rent", "job": "fixed"},
    {"age": -2, "income": float("nan"), "home": "owner", "job": None},
    {"age": "41", "income": None, "home": "", "job": "partime"},
    {"age": 0, "home": "rent", "job": "fixed", "unused": "x"},
]


def test_layout_and_values() -> None:
    x = featurize(SPEC, ROWS)
    assert x.shape == (4, SPEC.input_dim) == (4, 2 * 2 + 2 * 4)
    assert x.dtype == np.float32
    assert x[0, 0] == pytest.approx(math.log1p(30) / NUMERIC_SCALE)
    assert x[1, 0] == pytest.approx(-math.log1p(2) / NUMERIC_SCALE)
    assert x[2, 0] == pytest.approx(math.log1p(41) / NUMERIC_SCALE)
    # one-hot per categorical column, nothing for missing
    assert x[0, 4:8].sum() == 1 and x[0, 8:12].sum() == 1
    assert x[1, 8:12].sum() == 0
    assert x[2, 4:8].sum() == 0
    np.testing.assert_array_equal(x[0, 4:], x[3, 4:])  # same categories, same slots


def test_missing_numeric_values_set_the_indicator() -> None:
    x = featurize(SPEC, ROWS)
    assert x[0, 3] == 0 and x[0, 2] > 0  # present
    for row in (1, 2, 3):  # NaN, None, absent
        assert x[row, 2] == 0 and x[row, 3] == 1
    inf = featurize(SPEC, [{"age": float("inf")}])
    assert inf[0, 0] == 0 and inf[0, 1] == 1


def test_a_row_alone_featurizes_as_in_any_batch() -> None:
    batch = featurize(SPEC, ROWS)
    for i, row in enumerate(ROWS):
        np.testing.assert_array_equal(featurize(SPEC, [row])[0], batch[i])
    extreme = [*ROWS, {"age": 1e12, "income": -1e9, "home": "castle", "job": "king"}]
    np.testing.assert_array_equal(featurize(SPEC, extreme)[: len(ROWS)], batch)


def test_hashing_is_stable_across_processes() -> None:
    code = (
        "from models.tabular import FeatureSpec, featurize;"
        "s = FeatureSpec((), ('c',), 64);"
        "print(featurize(s, [{'c': v} for v in 'abcdefgh']).argmax(axis=1).tolist())"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    local = featurize(FeatureSpec((), ("c",), 64), [{"c": v} for v in "abcdefgh"])
    assert outputs == {f"{local.argmax(axis=1).tolist()}\n"}


def test_non_numeric_text_in_a_numeric_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="age"):
        featurize(SPEC, [{"age": "old"}])


def test_infer_spec_from_rows_and_frames() -> None:
    rows = [{"a": 1, "b": "x", "c": None, "label": 1}, {"a": 2.5, "b": "y", "c": 3}]
    assert infer_spec(rows, exclude=["label"]) == FeatureSpec(("a", "c"), ("b",))
    frame = pd.DataFrame(
        {"n": [1, 2], "f": [0.5, None], "s": ["u", None], "flag": [True, False], "y": [0, 1]}
    )
    spec = infer_spec(frame, exclude=("y",), hash_buckets=3)
    assert spec == FeatureSpec(("n", "f", "flag"), ("s",), 3)
    # pandas' missing categorical (float NaN) is treated as missing, not as the text "nan"
    x = featurize(spec, frame.to_dict("records"))
    assert x[1, -3:].sum() == 0


def test_spec_round_trip_and_validation() -> None:
    assert FeatureSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(ValueError):
        FeatureSpec(("a",), ("a",))
    with pytest.raises(ValueError):
        FeatureSpec(("a",), (), hash_buckets=0)


def test_knots_give_numeric_columns_a_thermometer_and_old_specs_keep_their_layout() -> None:
    from models.tabular import KNOT_RANGE, KNOT_SPACING

    spec = FeatureSpec(("age",), (), knot_spacing=KNOT_SPACING)
    knots = int(2 * KNOT_RANGE / KNOT_SPACING)
    assert spec.input_dim == 2 + knots
    x = featurize(spec, [{"age": 20}, {"age": 90}, {"age": None}])
    young, old, missing = x[:, 2:]
    assert np.all(np.diff(young) <= 0) and np.all((young >= 0) & (young <= 1))
    assert np.all(old >= young) and np.abs(old - young).sum() > 1.0  # log(90/20) ~ 1.5
    assert x[2, 1] == 1.0 and not missing.any()
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    stored = {"numeric": ["age"], "categorical": [], "hash_buckets": 8}
    assert FeatureSpec.from_dict(stored).input_dim == 2
