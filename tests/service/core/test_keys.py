"""Envelope encryption: data keys wrapped by a key-encryption key, kept in a key store outside
the database; destroying a key makes every copy of what it sealed unreadable."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from models.artifacts import LocalArtifactStore
from service.core.keys import (
    ArtifactKeyStore,
    KeyDestroyed,
    Keyring,
    Keys,
    key_id_of,
    split_blob,
)

KEK_A = base64.b64encode(b"a" * 32).decode()
KEK_B = base64.b64encode(b"b" * 32).decode()


def _keys(root: Path, spec: str | None = None, cache: float = 0.0) -> Keys:
    ring = Keyring.from_spec(spec, "dev-encryption-key")
    return Keys(ring, ArtifactKeyStore(LocalArtifactStore(root)), cache_seconds=cache)


def test_sealed_content_opens_with_its_key_and_names_it(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    keys.create("req-1")
    blob = keys.seal("req-1", b"Ada Lovelace, born 1815")
    assert b"Ada" not in blob and key_id_of(blob) == "req-1"
    assert keys.open(blob) == b"Ada Lovelace, born 1815"
    # The wrapped key is in the key store, not the plain data key.
    stored = json.loads((tmp_path / "keys" / "req-1").read_bytes())
    assert stored["kek"] == "kek0" and len(base64.b64decode(stored["wrapped"])) == 48


def test_a_destroyed_key_leaves_every_copy_unreadable(tmp_path: Path) -> None:
    keys = _keys(tmp_path, cache=60.0)
    keys.create("req-2")
    copy = bytes(keys.seal("req-2", b"canary"))  # e.g. a backup's copy of the row
    assert keys.destroy("req-2") and not (tmp_path / "keys" / "req-2").exists()
    with pytest.raises(KeyDestroyed):
        keys.open(copy)
    # Another process (own cache, same store) cannot open it either, nor with the KEK alone.
    with pytest.raises(KeyDestroyed):
        _keys(tmp_path).open(copy)
    assert not keys.destroy("req-2")


def test_a_blob_cannot_be_moved_under_another_key(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    keys.create("req-a")
    keys.create("req-b")
    blob = keys.seal("req-a", b"x")
    _, nonce, sealed = split_blob(blob)
    forged = b"LK1" + bytes([5]) + b"req-b" + nonce + sealed
    with pytest.raises(ValueError, match="does not match"):
        keys.open(forged)


def test_rotation_rewraps_under_the_new_kek(tmp_path: Path) -> None:
    old = _keys(tmp_path, f"a:{KEK_A}")
    old.create("req-3")
    blob = old.seal("req-3", b"fact")
    rotated = _keys(tmp_path, f"b:{KEK_B},a:{KEK_A}")
    assert rotated.open(blob) == b"fact"  # the old KEK still unwraps
    assert rotated.rewrap("req-3") and not rotated.rewrap("req-3")
    assert json.loads((tmp_path / "keys" / "req-3").read_bytes())["kek"] == "b"
    only_new = _keys(tmp_path, f"b:{KEK_B}")
    assert only_new.open(blob) == b"fact"  # the old KEK can now be retired
    with pytest.raises(ValueError, match="not configured"):
        _keys(tmp_path, f"a:{KEK_A}").open(blob)


def test_keyed_digests_match_while_the_key_exists(tmp_path: Path) -> None:
    keys = _keys(tmp_path)
    keys.create("req-4")
    first = keys.digest("req-4", "dpo-text", "case 123")
    assert first == keys.digest("req-4", "dpo-text", "case 123")
    assert first != keys.digest("req-4", "other", "case 123")
    keys.destroy("req-4")
    with pytest.raises(KeyDestroyed):
        keys.digest("req-4", "dpo-text", "case 123")


def test_a_malformed_keyring_is_refused() -> None:
    with pytest.raises(ValueError, match="base64 of 32 bytes"):
        Keyring.from_spec("a:" + base64.b64encode(b"short").decode(), "x")
