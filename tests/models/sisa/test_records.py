"""A shard's layout refuses duplicate keys, slices out of range, unknown labels and features
of the wrong shape."""

from __future__ import annotations

import numpy as np
import pytest

from models.sisa import SisaConfig, TrainingRecord
from models.sisa.records import ShardLayout

CONFIG = SisaConfig(shards=8, slices=5, input_dim=2, num_classes=2)


def test_layout_validates_records() -> None:
    good = TrainingRecord("k", 0, np.zeros(2), 1)
    with pytest.raises(ValueError, match="duplicate"):
        ShardLayout.build(CONFIG, [good, good])
    with pytest.raises(ValueError, match="slice"):
        ShardLayout.build(CONFIG, [TrainingRecord("k", 5, np.zeros(2), 1)])
    with pytest.raises(ValueError, match="label"):
        ShardLayout.build(CONFIG, [TrainingRecord("k", 0, np.zeros(2), 2)])
    with pytest.raises(ValueError, match="shape"):
        ShardLayout.build(CONFIG, [TrainingRecord("k", 0, np.zeros(3), 1)])
