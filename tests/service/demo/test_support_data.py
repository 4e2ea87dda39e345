"""The demo's checkpoint cache keeps nothing of the erased person between runs."""

from __future__ import annotations

from pathlib import Path

from models.artifacts import LocalArtifactStore
from models.finetune.checkpoints import CHECKPOINT_PREFIX
from service.demo.support_data import keep_unerased_checkpoints, seed_checkpoints


def test_checkpoints_the_erasure_destroyed_leave_the_cache(tmp_path: Path) -> None:
    cache, run = tmp_path / "cache", tmp_path / "run"
    first = LocalArtifactStore(run)
    for name in ("kept", "saw-author"):
        first.put(CHECKPOINT_PREFIX + name, name.encode())
    # An earlier run cached both; this run's erasure destroyed the one that saw the author.
    keep_unerased_checkpoints(cache, str(run))
    first.delete(CHECKPOINT_PREFIX + "saw-author")
    assert keep_unerased_checkpoints(cache, str(run)) == (1, 1)
    assert LocalArtifactStore(cache).keys(CHECKPOINT_PREFIX) == [CHECKPOINT_PREFIX + "kept"]
    # The next run is seeded with the survivor only.
    assert seed_checkpoints(cache, str(tmp_path / "next")) == 1
    assert not list(cache.rglob("saw-author"))
