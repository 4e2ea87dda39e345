"""Artifact stores: the same contract over a local folder and over fsspec."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.artifacts import (
    ArtifactNotFound,
    ArtifactStore,
    FsspecArtifactStore,
    LocalArtifactStore,
    open_store,
)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "artifacts")
    else:
        yield FsspecArtifactStore(f"memory://lethe-test-{uuid.uuid4().hex}/prefix")


def test_put_get_exists_delete(store: ArtifactStore) -> None:
    assert not store.exists("checkpoints/a")
    store.put("checkpoints/a", b"one")
    assert store.exists("checkpoints/a")
    assert store.get("checkpoints/a") == b"one"
    store.put("checkpoints/a", b"one")  # idempotent
    store.put("checkpoints/a", b"two")  # replaces
    assert store.get("checkpoints/a") == b"two"
    assert store.delete("checkpoints/a") is True
    assert store.delete("checkpoints/a") is False
    assert not store.exists("checkpoints/a")


def test_missing_key_raises_artifact_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound):
        store.get("nothing/here")
    with pytest.raises(KeyError):
        store.get("nothing")


def test_keys_filter_by_prefix_across_folders(store: ArtifactStore) -> None:
    for key in ["checkpoints/ab1", "checkpoints/ab2", "checkpoints/cd", "manifests/x/y", "top"]:
        store.put(key, key.encode())
    assert store.keys() == [
        "checkpoints/ab1",
        "checkpoints/ab2",
        "checkpoints/cd",
        "manifests/x/y",
        "top",
    ]
    assert store.keys("checkpoints/") == ["checkpoints/ab1", "checkpoints/ab2", "checkpoints/cd"]
    assert store.keys("checkpoints/ab") == ["checkpoints/ab1", "checkpoints/ab2"]
    assert store.keys("manifests/x") == ["manifests/x/y"]
    assert store.keys("absent/") == []
    assert store.get("manifests/x/y") == b"manifests/x/y"


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../up", "a/../b", "a/.hidden", "a\\b"])
def test_unsafe_keys_are_rejected(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_local_writes_leave_no_staging_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    for i in range(5):
        store.put("a/b", bytes([i]) * 1000)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b"]
    assert store.keys() == ["a/b"]
    # Artifacts are derived from personal data: lethe's user only.
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o600


def _hammer(root: str, marker: int) -> None:
    store = LocalArtifactStore(Path(root))
    for _ in range(50):
        store.put("shared/blob", bytes([marker]) * 200_000)


def test_local_store_is_safe_across_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(str(tmp_path), m)) for m in (1, 2, 3)]
    for worker in workers:
        worker.start()
    reader = LocalArtifactStore(tmp_path)
    torn = 0
    while any(w.is_alive() for w in workers):
        if reader.exists("shared/blob"):
            data = reader.get("shared/blob")
            torn += len(data) != 200_000 or len(set(data)) != 1
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    assert torn == 0
    final = reader.get("shared/blob")
    assert len(final) == 200_000 and len(set(final)) == 1
    assert reader.keys() == ["shared/blob"]


def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path / "plain")), LocalArtifactStore)
    assert isinstance(open_store(f"file://{tmp_path / 'url'}"), LocalArtifactStore)
    assert isinstance(open_store(tmp_path / "path"), LocalArtifactStore)
    memory = open_store(f"memory://lethe-open-{uuid.uuid4().hex}")
    assert isinstance(memory, FsspecArtifactStore)
    memory.put("k", b"v")
    assert memory.get("k") == b"v"
