"""A key per (model, subject) for training records, kept in bundles: destroying one subject's
key leaves its records unreadable and every other subject's readable."""

from __future__ import annotations

import base64
import json
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


def test_records_sealed_with_the_long_header_still_open(tmp_path: Path) -> None:
    """Records sealed before the compact header (``LS1``: bundle id and subject spelt out)
    open as before; a subject ref of another form is still sealed that way."""
    from service.core.subject_keys import COMPACT_MAGIC, MAGIC, bundle_id

    model = uuid.uuid4()
    subject, odd = "sub_" + "c" * 40, "legacy-subject"
    keys = SubjectKeys(_keys(tmp_path), model)
    keys.ensure([subject, odd])
    compact = keys.seal(subject, b"new")
    assert compact[:3] == COMPACT_MAGIC and keys.open(compact) == b"new"
    # 3 + 16 + 20 header bytes, 12 nonce, the text and the 16-byte tag: nothing spelt out.
    assert len(compact) == 3 + 16 + 20 + 12 + 3 + 16 and subject.encode() not in compact
    # The same record as the long form wrote it: the same nonce and ciphertext, LS1 header.
    bid, s = bundle_id(model, subject).encode(), subject.encode()
    long_form = MAGIC + bytes([len(bid)]) + bid + bytes([len(s)]) + s + compact[39:]
    reader = SubjectKeys(_keys(tmp_path), model)
    assert reader.open(long_form) == b"new"
    assert keys.seal(odd, b"old")[:3] == MAGIC and reader.open(keys.seal(odd, b"old")) == b"old"
    # A header that names another subject fails to open (the subject is the associated data).
    other = "sub_" + "d" * 40
    keys.ensure([other])
    forged = compact[:19] + bytes.fromhex("d" * 40) + compact[39:]
    with pytest.raises(ValueError):
        reader.open(forged)


def test_a_payload_orjson_refuses_is_sealed_and_opens_the_same(tmp_path: Path) -> None:
    """Text with a lone surrogate (an escaped JSON string can carry one) is sealed through
    the stdlib encoder instead of failing the ingestion, and opens to the same text."""
    subject, model = "sub_" + "e" * 40, uuid.uuid4()
    keys = SubjectKeys(_keys(tmp_path), model)
    keys.ensure([subject])
    odd = {"prompt": "x\ud800y", "score": 0.1 + 0.2}
    sealed = seal_payload(keys, subject, odd)[SEALED_FIELD]
    # Opened as every reader opens a payload (PayloadReader: the stdlib JSON decoder).
    assert json.loads(keys.open(base64.b64decode(sealed))) == odd
