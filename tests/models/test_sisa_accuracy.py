"""Early stopping, placement, the public base and the weighted vote keep erasure exact."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.artifacts import LocalArtifactStore
from models.sisa import (
    DEFAULT_SLICES,
    Ensemble,
    Manifest,
    PublicBase,
    SisaConfig,
    TrainingRecord,
    assign_shard,
    assign_slice,
    compare_placement,
    default_shards,
    expected_retrain_fraction,
    is_validation_record,
    load_checkpoint,
    single_model_baseline,
    train_shard,
    unlearn,
)
from models.sisa.fitting import MIN_STEPS_PER_ROUND
from models.sisa.records import ShardLayout
from models.sisa.training import train_shard_in_memory

CONFIG = SisaConfig(
    shards=2,
    slices=4,
    input_dim=6,
    num_classes=3,
    hidden=(8,),
    batch_size=8,
    seed=3,
    validation_fraction=0.25,
    patience=2,
    max_rounds=30,
)


def make_records(config: SisaConfig, count: int, seed: int = 0) -> dict[int, list[TrainingRecord]]:
    rng = np.random.default_rng(seed)
    by_shard: dict[int, list[TrainingRecord]] = {s: [] for s in range(config.shards)}
    for i in range(count):
        x = rng.normal(size=config.input_dim).astype(np.float32)
        key = f"k{i:04d}"
        record = TrainingRecord(key, assign_slice(key, config), x, int(np.argmax(x[:3])))
        by_shard[assign_shard(f"subject-{i}", config)].append(record)
    return by_shard


def assert_states_equal(left: dict[str, torch.Tensor], right: object) -> None:
    assert isinstance(right, dict) or hasattr(right, "items")
    assert set(left) == set(right)  # type: ignore[arg-type]
    for name, tensor in left.items():
        assert torch.equal(tensor, right[name]), name  # type: ignore[index]


def test_early_stopped_retrain_equals_scratch_with_recomputed_split_and_epochs(
    tmp_path: Path,
) -> None:
    store = LocalArtifactStore(tmp_path)
    data = make_records(CONFIG, 160)
    manifest = Manifest.from_results(train_shard(CONFIG, s, data[s], store) for s in data)
    shard = max(data, key=lambda s: len(data[s]))
    target = next(r for r in sorted(data[shard], key=lambda r: r.key) if r.slice == 2)

    result = unlearn(CONFIG, data, [target.key], store, manifest)
    outcome = result.shards[shard]
    assert outcome.training.resumed_from_slice == 2
    retained = result.retained_records[shard]
    scratch = train_shard_in_memory(CONFIG, shard, retained)

    stored = load_checkpoint(store, outcome.checkpoint_after)
    assert_states_equal(scratch.model.state_dict(), stored.model_state)
    fresh_state = scratch.optimizer.state_dict()["state"]
    assert fresh_state
    for index, slots in fresh_state.items():
        for slot, tensor in slots.items():
            assert torch.equal(tensor, stored.optimizer_state["state"][index][slot]), slot
    # The validation split is a function of each retained key alone ...
    layout = ShardLayout.build(CONFIG, retained)
    keys = [k for slice_keys in layout.keys_by_slice for k in slice_keys]
    assert layout.validation.tolist() == [is_validation_record(k, CONFIG) for k in keys]
    assert 0 < layout.validation.sum() < len(keys)
    # ... and the stopping epochs of the resumed run are those training from scratch chose.
    assert outcome.training.epochs_by_slice == scratch.result.epochs_by_slice
    assert outcome.training.validation_accuracy == scratch.result.validation_accuracy
    # Early stopping really decided: some slice stopped before its cap of max_rounds rounds.
    caps = []
    for slice_index in range(CONFIG.slices):
        end = layout.ends[slice_index]
        trained_on = int((~layout.validation[:end]).sum())
        steps = math.ceil(trained_on / CONFIG.batch_size)
        caps.append(CONFIG.max_rounds * max(1, math.ceil(MIN_STEPS_PER_ROUND / steps)))
    epochs = scratch.result.epochs_by_slice
    assert any(0 < e < cap for e, cap in zip(epochs, caps, strict=True)), (epochs, caps)


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


def test_a_changed_schedule_never_resumes_old_checkpoints(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    data = make_records(CONFIG, 80)
    train_shard(CONFIG, 0, data[0], store)
    again = train_shard(CONFIG, 0, data[0], store)
    assert again.slices_trained == 0
    other = CONFIG.replace(patience=3)
    changed = train_shard(other, 0, data[0], store)
    assert changed.resumed_from_slice == 0
    assert set(changed.checkpoint_ids).isdisjoint(again.checkpoint_ids)


def test_a_shard_too_small_to_learn_says_so() -> None:
    data = make_records(CONFIG, 400, seed=1)
    learned = train_shard_in_memory(CONFIG, 0, data[0]).result
    assert learned.too_small is None
    assert learned.validation_accuracy is not None and learned.majority_accuracy is not None
    assert learned.validation_accuracy > learned.majority_accuracy
    tiny = train_shard_in_memory(CONFIG, 0, data[0][:12]).result
    assert tiny.too_small is not None and "validation records" in tiny.too_small
    empty = train_shard_in_memory(CONFIG, 1, []).result
    assert empty.too_small == "no training records"


def test_placement_puts_flagged_subjects_in_the_tail_slices() -> None:
    config = CONFIG.replace(slices=8, tail_slices=2)
    keys = [f"record-{i}" for i in range(400)]
    flagged = {assign_slice(k, config, likely_erased=True) for k in keys}
    others = {assign_slice(k, config) for k in keys}
    assert flagged == {6, 7}
    assert others == set(range(6))
    # A function of the record alone: the same answer whatever else exists.
    assert [assign_slice(k, config, likely_erased=True) for k in keys[:5]] == [
        assign_slice(k, config, likely_erased=True) for k in reversed(keys[:5])
    ][::-1]
    records = [(k, i % 10 == 0) for i, k in enumerate(keys)]
    report = compare_placement(config, records, flagged_erasure_odds=20.0)
    assert report.flagged_records == 40
    assert report.with_placement < report.without_placement
    # Without placement the expected fraction is that of uniform slices.
    assert report.without_placement == pytest.approx(
        expected_retrain_fraction([1.0] * 8, [1.0] * 8), abs=0.05
    )


def test_expected_retrain_fraction_extremes() -> None:
    sizes = [10.0, 10.0, 10.0, 10.0]
    work = [10.0, 20.0, 30.0, 40.0]
    assert expected_retrain_fraction(sizes, [1, 0, 0, 0]) == pytest.approx(1.0)
    assert expected_retrain_fraction(sizes, [0, 0, 0, 1]) == pytest.approx(40 / 100)
    assert expected_retrain_fraction(sizes, [0, 0, 1, 0], work) == pytest.approx(70 / 100)


def make_base(bump: float = 0.0) -> PublicBase:
    generator = torch.Generator().manual_seed(5)
    network = nn.Sequential(nn.Linear(6, 5), nn.Tanh())
    with torch.no_grad():
        network[0].weight.copy_(torch.randn(5, 6, generator=generator))
        network[0].bias.fill_(bump)
    return PublicBase(network, input_dim=6, name="test-base", provenance="random, no data")


def test_the_public_base_hash_addresses_checkpoints(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    base, changed = make_base(), make_base(bump=1e-3)
    assert base.content_hash == make_base().content_hash
    assert base.content_hash != changed.content_hash
    assert base.attestation()["content_hash"] == base.content_hash
    assert base.attestation()["holds_subject_data"] is False
    raw = make_records(CONFIG, 80)[0]

    def headed(b: PublicBase) -> tuple[SisaConfig, list[TrainingRecord]]:
        config = CONFIG.replace(input_dim=b.feature_dim, base_hash=b.content_hash)
        features = b.features(np.stack([r.x for r in raw]))
        return config, [
            TrainingRecord(r.key, r.slice, f, r.y) for r, f in zip(raw, features, strict=True)
        ]

    config, records = headed(base)
    first = train_shard(config, 0, records, store)
    changed_config, changed_records = headed(changed)
    second = train_shard(changed_config, 0, changed_records, store)
    assert second.resumed_from_slice == 0
    assert set(first.checkpoint_ids).isdisjoint(second.checkpoint_ids)
    # Even with the very same features, a different base hash is a different address.
    relabelled = train_shard(config.replace(base_hash=changed.content_hash), 0, records, store)
    assert relabelled.resumed_from_slice == 0
    manifest = Manifest.from_results([first])
    served = Ensemble.load(config, manifest, store, base=base)
    assert served.predict_proba(np.stack([r.x for r in raw[:3]])).shape == (3, 3)
    with pytest.raises(ValueError, match="public base"):
        Ensemble.load(config, manifest, store, base=changed)


def test_validation_weights_come_from_each_shard_and_follow_its_retrain(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    data = make_records(CONFIG, 200, seed=2)
    results = {s: train_shard(CONFIG, s, data[s], store) for s in data}
    manifest = Manifest.from_results(results.values())
    weighted = Ensemble.load(CONFIG, manifest, store, weighting="validation")
    assert weighted.weights == {s: results[s].validation_accuracy for s in data}
    assert Ensemble.load(CONFIG, manifest, store).weights == {s: 1.0 for s in data}
    erase = [r.key for r in sorted(data[0], key=lambda r: r.key)[:15]]
    after = unlearn(CONFIG, data, erase, store, manifest)
    reweighted = Ensemble.load(CONFIG, after.manifest, store, weighting="validation")
    assert reweighted.weights[0] == after.shards[0].training.validation_accuracy
    assert reweighted.weights[1] == weighted.weights[1]


def test_the_fixed_schedule_still_trains_every_record_and_stays_exact(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    fixed = CONFIG.replace(validation_fraction=0.0, epochs=4)
    data = make_records(fixed, 120)
    manifest = Manifest.from_results(train_shard(fixed, s, data[s], store) for s in data)
    target = next(r for r in sorted(data[0], key=lambda r: r.key) if r.slice == 1)
    result = unlearn(fixed, data, [target.key], store, manifest)
    outcome = result.shards[0]
    assert outcome.training.epochs_by_slice == [fixed.slice_epochs] * fixed.slices
    assert not ShardLayout.build(fixed, data[0]).validation.any()
    scratch = train_shard_in_memory(fixed, 0, result.retained_records[0])
    assert_states_equal(
        scratch.model.state_dict(), load_checkpoint(store, outcome.checkpoint_after).model_state
    )


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
    """The first try the issue describes: a table of a few hundred people, every SISA setting
    left at its default. Every shard must be big enough to show it learned (the old defaults,
    S = 16 or 8, cut 450 patients into shards of 28-57 with 4-9 validation records each, all
    'too small'), and the ensemble must be within one point of one model on held-out patients."""
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
