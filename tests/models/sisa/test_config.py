"""SisaConfig: fingerprints (old configurations keep theirs), round trips, and defaults that learn
on a table of a few hundred people."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from torch import nn

from models.sisa import (
    DEFAULT_SLICES,
    Ensemble,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    default_shards,
    single_model_baseline,
)
from models.sisa.training import train_shard_in_memory


def test_v1_configs_keep_their_fingerprint_and_new_schedules_change_it() -> None:
    v1 = {
        "shards": 2,
        "slices": 4,
        "input_dim": 6,
        "num_classes": 3,
        "hidden": [8],
        "epochs": 20,
        "learning_rate": 0.01,
        "batch_size": 64,
        "seed": 0,
        "partition_salt": "lethe",
    }
    canonical = json.dumps(v1, sort_keys=True, separators=(",", ":"))
    stored = SisaConfig.from_dict(v1)
    assert not stored.early_stopping
    assert stored.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    early = stored.replace(validation_fraction=0.15)
    assert early.fingerprint() != stored.fingerprint()
    assert early.replace(patience=9).fingerprint() != early.fingerprint()
    assert early.replace(base_hash="ab" * 32).fingerprint() != early.fingerprint()


def _breast_cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 569-patient Wisconsin table scikit-learn ships, featurized as lethe featurizes a CSV
    (nothing fitted to the data); a fifth of the patients, by a hash of the row, held out."""
    from sklearn.datasets import load_breast_cancer

    from models.tabular import KNOT_SPACING, featurize, infer_spec

    frame = load_breast_cancer(as_frame=True).frame
    features = frame.drop(columns=["target"])
    x = featurize(infer_spec(features, knot_spacing=KNOT_SPACING), features.to_dict("records"))
    y = frame["target"].to_numpy(dtype=np.int64)
    test = np.array(
        [hashlib.sha256(f"patient-{i}".encode()).digest()[0] < 256 // 5 for i in range(len(y))]
    )
    return x[~test], y[~test], x[test], y[test]


def test_the_default_configuration_on_a_few_hundred_patients_stays_near_one_model() -> None:
    """A table of a few hundred people with every SISA setting left at its default: every shard
    is big enough to show it learned (defaults of S = 16 or 8 would cut 450 patients into shards
    of 28-57 with 4-9 validation records each, all 'too small'), and the ensemble is within one
    point of one model on held-out patients."""
    x, y, test_x, test_y = _breast_cancer()
    config = SisaConfig(
        shards=default_shards(len(y)), slices=DEFAULT_SLICES, input_dim=x.shape[1], num_classes=2
    )
    keys = [f"patient-{i}" for i in range(len(y))]
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(config.shards)}
    for key, features, label in zip(keys, x, y, strict=True):
        record = TrainingRecord(key, assign_slice(key, config), features, int(label))
        by_shard[assign_shard(key, config)].append(record)
    members: dict[int, nn.Module] = {}
    for shard, records in by_shard.items():
        trained = train_shard_in_memory(config, shard, records)
        assert trained.result.too_small is None, (shard, trained.result.too_small)
        members[shard] = trained.model
    one_model = single_model_baseline(config, x, y, keys=keys).accuracy(test_x, test_y)
    ensemble = Ensemble(config, members).accuracy(test_x, test_y)
    majority = max(float(test_y.mean()), 1 - float(test_y.mean()))
    assert one_model > majority + 0.2
    assert 100 * (one_model - ensemble) <= 1.0, (one_model, ensemble)


def test_config_round_trip_fingerprint_and_slice_epochs() -> None:
    config = SisaConfig(shards=4, slices=8, input_dim=3, num_classes=2, hidden=(5, 4), epochs=20)
    assert SisaConfig.from_dict(config.to_dict()) == config
    assert SisaConfig.from_dict(config.to_dict()).fingerprint() == config.fingerprint()
    assert len(config.fingerprint()) == 64
    changed = SisaConfig.from_dict({**config.to_dict(), "learning_rate": 0.02})
    assert changed.fingerprint() != config.fingerprint()
    assert config.slice_epochs == 5  # ceil(2 * 20 / 9)
    assert SisaConfig(shards=1, slices=1, input_dim=1, num_classes=2, epochs=3).slice_epochs == 3
    with pytest.raises(ValueError, match="shards"):
        SisaConfig(shards=0, slices=1, input_dim=1, num_classes=2)
