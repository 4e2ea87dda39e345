"""Serving the ensemble: shard probabilities averaged, or weighted by each shard's validation
accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.artifacts import LocalArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    train_shard,
    unlearn,
)
from models.sisa.classifier import softmax_outputs
from tests.support.sisa import EARLY_STOPPING, blobs, make_records, trained_ensemble


def test_ensemble_averages_shard_probabilities(tmp_path: Path) -> None:
    x, y = blobs(300, 0)
    ensemble = trained_ensemble(x, y, tmp_path)
    test_x, test_y = blobs(200, 1)
    probabilities = ensemble.predict_proba(test_x)
    expected = np.mean([softmax_outputs(m, test_x) for m in ensemble.members.values()], axis=0)
    np.testing.assert_allclose(probabilities, expected)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert ensemble.shards == [0, 1]
    assert ensemble.accuracy(test_x, test_y) > 0.65
    np.testing.assert_array_equal(ensemble.predict(test_x), probabilities.argmax(axis=1))


def test_validation_weights_come_from_each_shard_and_follow_its_retrain(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    data = make_records(EARLY_STOPPING, 200, seed=2)
    results = {s: train_shard(EARLY_STOPPING, s, data[s], store) for s in data}
    manifest = Manifest.from_results(results.values())
    weighted = Ensemble.load(EARLY_STOPPING, manifest, store, weighting="validation")
    assert weighted.weights == {s: results[s].validation_accuracy for s in data}
    assert Ensemble.load(EARLY_STOPPING, manifest, store).weights == {s: 1.0 for s in data}
    erase = [r.key for r in sorted(data[0], key=lambda r: r.key)[:15]]
    after = unlearn(EARLY_STOPPING, data, erase, store, manifest)
    reweighted = Ensemble.load(EARLY_STOPPING, after.manifest, store, weighting="validation")
    assert reweighted.weights[0] == after.shards[0].training.validation_accuracy
    assert reweighted.weights[1] == weighted.weights[1]
