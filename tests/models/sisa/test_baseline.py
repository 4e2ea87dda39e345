"""The single-model baseline learns and is deterministic."""

from __future__ import annotations

import numpy as np

from models.sisa import (
    single_model_baseline,
)
from tests.support.sisa import BLOBS, blobs


def test_single_model_baseline_learns_and_is_deterministic() -> None:
    x, y = blobs(300, 0)
    test_x, test_y = blobs(200, 1)
    first = single_model_baseline(BLOBS, x, y)
    second = single_model_baseline(BLOBS, x, y)
    assert first.accuracy(test_x, test_y) > 0.65
    np.testing.assert_array_equal(first.predict_proba(test_x), second.predict_proba(test_x))
