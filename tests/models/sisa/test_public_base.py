"""The public base: its content hash addresses checkpoints, and an ensemble refuses another base."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifacts import LocalArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    PublicBase,
    SisaConfig,
    TrainingRecord,
    train_shard,
)
from tests.support.sisa import EARLY_STOPPING, make_base, make_records


def test_the_public_base_hash_addresses_checkpoints(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    base, changed = make_base(), make_base(bump=1e-3)
    assert base.content_hash == make_base().content_hash
    assert base.content_hash != changed.content_hash
    assert base.attestation()["content_hash"] == base.content_hash
    assert base.attestation()["holds_subject_data"] is False
    raw = make_records(EARLY_STOPPING, 80)[0]

    def headed(b: PublicBase) -> tuple[SisaConfig, list[TrainingRecord]]:
        config = EARLY_STOPPING.replace(input_dim=b.feature_dim, base_hash=b.content_hash)
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
