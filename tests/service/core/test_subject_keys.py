"""A key per (model, subject) for training records, kept in bundles: destroying one subject's
key leaves its records unreadable and every other subject's readable."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from models.artifacts import LocalArtifactStore
from service.core.keys import ArtifactKeyStore, KeyDestroyed, Keyring, Keys
from service.core.subject_keys import SEALED_FIELD, SubjectKeys, seal_payload


def _keys(root: Path) -> Keys:
    ring = Keyring.from_spec(None, "dev-encryption-key")
    return Keys(ring, ArtifactKeyStore(LocalArtifactStore(root)), cache_seconds=0)


def test_one_subjects_key_goes_the_others_stay(tmp_path: Path) -> None:
    model = uuid.uuid4()
    subjects = [f"sub_{i:040x}" for i in range(600)]
    keys = SubjectKeys(_keys(tmp_path), model)
    keys.ensure(subjects)
    # 600 subjects, at most 256 bundle objects: not one object per subject.
    assert len(list((tmp_path / "keys" / "subjects" / str(model)).iterdir())) <= 256
    sealed = {s: seal_payload(keys, s, {"age": 41, "who": s}) for s in subjects}
    gone = subjects[7]
    assert keys.destroy([gone]) == [f"subjects/{model}/{gone[-2:]}#{gone}"]
    assert keys.destroy([gone]) == []
    # Another process (a fresh reader over the same key store) sees the destruction.
    other = SubjectKeys(_keys(tmp_path), model)

    blob = base64.b64decode(sealed[gone][SEALED_FIELD])
    with pytest.raises(KeyDestroyed):
        other.open(blob)
    kept = subjects[8]
    assert other.open(base64.b64decode(sealed[kept][SEALED_FIELD])) == b'{"age":41,"who":"%s"}' % (
        kept.encode()
    )
    # The bundle itself is sealed under the KEK: no subject key or ref in clear.
    raw = (tmp_path / "keys" / "subjects" / str(model) / kept[-2:]).read_bytes()
    assert kept.encode() not in raw


def test_a_destroyed_key_seals_nothing_more_in_the_process_that_destroyed_it(
    tmp_path: Path,
) -> None:
    model = uuid.uuid4()
    keys = SubjectKeys(_keys(tmp_path), model)
    keys.ensure(["sub_" + "a" * 40, "sub_" + "b" * 40])
    first = keys.seal("sub_" + "a" * 40, b"one")  # its sealer is now built and kept
    assert keys.open(first) == b"one"
    keys.destroy(["sub_" + "a" * 40])
    with pytest.raises(KeyDestroyed):
        keys.seal("sub_" + "a" * 40, b"two")
    with pytest.raises(KeyDestroyed):
        keys.open(first)
    # Nonces never repeat under one instance: two seals of one text differ.
    twice = [keys.seal("sub_" + "b" * 40, b"same") for _ in range(2)]
    assert twice[0] != twice[1] and {keys.open(t) for t in twice} == {b"same"}
