"""A data key per (model, data subject) for training records: an erasure destroys the subject's
key, so every copy of their records (free space in the table's pages, WAL, backups) is shredded
even before VACUUM reaches it.

Keys are kept in the key store (``service.core.keys``) in bundles: a subject's key lives in
bundle ``subjects/<model id>/<b>`` where ``b`` is one of 256 buckets picked from the subject's
keyed hash, the whole bundle sealed (AES-GCM) under the current key-encryption key. Ingesting
100,000 records writes 256 objects, not one per subject; destroying a key rewrites its bundle
without it (the old object is replaced; callers serialise rewrites of a model's bundles).

A sealed record names its model and subject, from which its bundle follows: ``LS2`` · the
model id's 16 bytes · the subject ref's 20-byte digest · 12-byte nonce · ciphertext (the
subject ref is the associated data). That header is 39 bytes where spelling both out took 97,
which was most of a sealed record and of what sealing added to an ingestion's writes. Records
sealed before (``LS1`` · bundle-id length · bundle id · subject length · subject · nonce ·
ciphertext) still open; a subject ref not of the ``sub_`` + 40 hex form is sealed that way.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import os
import uuid
from base64 import b64encode
from collections.abc import Iterable
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.core.config import Settings
from service.core.keys import NONCE_BYTES, KeyDestroyed, Keys, keys_for

MAGIC = b"LS1"
COMPACT_MAGIC = b"LS2"
SEALED_FIELD = "lethe_sealed"
SUBJECT_PREFIX = "sub_"
SUBJECT_DIGEST_BYTES = 20


def bundle_id(model_id: uuid.UUID | str, subject: str) -> str:
    # subject refs are "sub_<hex>": two hex digits give 256 buckets of even size.
    return f"subjects/{model_id}/{subject[-2:]}"


class SubjectKeys:
    """The per-subject keys of one model: create at ingestion, open records, destroy."""

    def __init__(self, keys: Keys, model_id: uuid.UUID | str) -> None:
        self.keys, self.model_id = keys, str(model_id)
        self._model_bytes = _compact_model(self.model_id)
        self._bundles: dict[str, dict[str, bytes]] = {}
        # One cipher object per subject key (building one costs more than sealing a record).
        self._ciphers: dict[str, AESGCM] = {}
        self._sealers: dict[str, tuple[AESGCM, bytes, bytes]] = {}
        # Nonces: a random 8-byte prefix of this instance and a counter; ingestion seals all
        # of a model's records through one instance, so a key never sees a nonce twice.
        self._prefix = os.urandom(NONCE_BYTES - 4)
        self._count = itertools.count()

    def _cipher(self, bid: str, subject: str) -> AESGCM | None:
        cipher = self._ciphers.get(subject)
        if cipher is None:
            key = self._load(bid).get(subject)
            if key is None:
                return None
            cipher = self._ciphers[subject] = AESGCM(key)
        return cipher

    def _load(self, bid: str) -> dict[str, bytes]:
        if bid not in self._bundles:
            try:
                wrapped = self.keys.store.get(bid)
            except KeyDestroyed:
                self._bundles[bid] = {}
            else:
                plain = self._kek_open(bid, wrapped)
                self._bundles[bid] = {s: base64.b64decode(k) for s, k in json.loads(plain).items()}
        return self._bundles[bid]

    def _kek_open(self, bid: str, wrapped: bytes) -> bytes:
        stored = json.loads(wrapped)
        kek = self.keys.keyring.keks[stored["kek"]]
        nonce, body = base64.b64decode(stored["nonce"]), base64.b64decode(stored["sealed"])
        return AESGCM(kek).decrypt(nonce, body, bid.encode())

    def _save(self, bid: str) -> None:
        plain = json.dumps({s: base64.b64encode(k).decode() for s, k in self._bundles[bid].items()})
        kek_id = self.keys.keyring.current
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys.keyring.keks[kek_id]).encrypt(nonce, plain.encode(), bid.encode())
        body = {
            "kek": kek_id,
            "nonce": base64.b64encode(nonce).decode(),
            "sealed": base64.b64encode(sealed).decode(),
        }
        self.keys.store.put(bid, json.dumps(body).encode())

    def ensure(self, subjects: Iterable[str]) -> None:
        """A key for every subject that has none yet (one write per bundle that changed)."""
        by_bundle: dict[str, list[str]] = {}
        for subject in dict.fromkeys(subjects):
            by_bundle.setdefault(bundle_id(self.model_id, subject), []).append(subject)
        missing = {
            bid: [s for s in group if s not in bundle]
            for bid, group in by_bundle.items()
            for bundle in [self._load(bid)]
        }
        fresh = os.urandom(32 * sum(map(len, missing.values())))  # one read of the source
        at = 0
        for bid in sorted(b for b, group in missing.items() if group):
            bundle = self._bundles[bid]
            for subject in missing[bid]:
                bundle[subject] = fresh[at : at + 32]
                at += 32
            self._save(bid)

    def seal(self, subject: str, plaintext: bytes) -> bytes:
        [blob] = self.seal_many([(subject, plaintext)])
        return blob

    def seal_many(self, items: Iterable[tuple[str, bytes]]) -> list[bytes]:
        """Each (subject, plaintext) sealed under the subject's key. Ingestion seals 100,000
        records in a row: names bound once, not looked up per record."""
        sealers, prefix, count, build = self._sealers, self._prefix, self._count, self._sealer
        blobs = []
        for subject, plaintext in items:
            cipher, header, aad = sealers.get(subject) or build(subject)
            nonce = prefix + next(count).to_bytes(4, "big")
            blobs.append(header + nonce + cipher.encrypt(nonce, plaintext, aad))
        return blobs

    def _sealer(self, subject: str) -> tuple[AESGCM, bytes, bytes]:
        """A subject's cipher with the header and associated data of its records, built once:
        ingestion seals every record through here, so nothing per record is built twice."""
        bid = bundle_id(self.model_id, subject)
        cipher = self._cipher(bid, subject)
        if cipher is None:
            raise KeyDestroyed(f"{bid}:{subject}")
        sealer = (cipher, _header(self._model_bytes, bid, subject), subject.encode())
        self._sealers[subject] = sealer
        return sealer

    def open(self, blob: bytes) -> bytes:
        _, bid, subject, nonce, body = _split(blob)
        return self._open(bid, subject, nonce, body)

    def _open(self, bid: str, subject: str, nonce: bytes, body: bytes) -> bytes:
        cipher = self._cipher(bid, subject)
        if cipher is None:
            raise KeyDestroyed(f"{bid}:{subject}")
        try:
            return cipher.decrypt(nonce, body, subject.encode())
        except InvalidTag as exc:
            raise ValueError("stored record does not match its key") from exc

    def destroy(self, subjects: Iterable[str]) -> list[str]:
        """Remove the subjects' keys (re-reading each bundle from the store first); the keys
        destroyed, as "<bundle>#<subject>". Callers hold a lock that serialises rewrites of
        this model's keys."""
        by_bundle: dict[str, list[str]] = {}
        for subject in subjects:
            by_bundle.setdefault(bundle_id(self.model_id, subject), []).append(subject)
        rewritten: list[str] = []
        for bid, group in sorted(by_bundle.items()):
            self._bundles.pop(bid, None)
            for subject in group:
                self._ciphers.pop(subject, None)
                self._sealers.pop(subject, None)
            bundle = self._load(bid)
            gone = sorted(s for s in group if bundle.pop(s, None) is not None)
            if gone:
                self._save(bid)
                rewritten.extend(f"{bid}#{s}" for s in gone)
        return rewritten


def _compact_subject(subject: str) -> bytes | None:
    """The subject ref's digest as bytes, when it has the form ``subject_ref`` gives."""
    digest = subject[len(SUBJECT_PREFIX) :]
    if not subject.startswith(SUBJECT_PREFIX) or len(digest) != 2 * SUBJECT_DIGEST_BYTES:
        return None
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        return None
    return raw if raw.hex() == digest else None  # lower-case hex only: it must round-trip


def _compact_model(model_id: str) -> bytes | None:
    try:
        parsed = uuid.UUID(model_id)
    except ValueError:
        return None
    return parsed.bytes if str(parsed) == model_id else None


def _header(model: bytes | None, bid: str, subject: str) -> bytes:
    raw = _compact_subject(subject)
    if model is not None and raw is not None:
        return COMPACT_MAGIC + model + raw
    b, s = bid.encode(), subject.encode()
    return MAGIC + bytes([len(b)]) + b + bytes([len(s)]) + s


COMPACT_HEADER_BYTES = 3 + 16 + SUBJECT_DIGEST_BYTES


@functools.lru_cache(maxsize=1 << 16)
def _compact_names(header: bytes) -> tuple[str, str, str]:
    """Model id, bundle id and subject ref of a compact header. A subject's records share
    their header, and a retrain opens all of a shard's records: each header is read once."""
    model_id = str(uuid.UUID(bytes=header[3:19]))
    subject = SUBJECT_PREFIX + header[19:].hex()
    return model_id, bundle_id(model_id, subject), subject


def _split(blob: bytes) -> tuple[str, str, str, bytes, bytes]:
    """A sealed record's model id, bundle id, subject ref, nonce and ciphertext."""
    blob = bytes(blob)
    if blob[:3] == COMPACT_MAGIC:
        at = COMPACT_HEADER_BYTES
        model_id, bid, subject = _compact_names(blob[:at])
        return model_id, bid, subject, blob[at : at + NONCE_BYTES], blob[at + NONCE_BYTES :]
    if blob[:3] != MAGIC:
        raise ValueError("not a sealed record")
    at = 3
    size = blob[at]
    bid = blob[at + 1 : at + 1 + size].decode()
    at += 1 + size
    size = blob[at]
    subject = blob[at + 1 : at + 1 + size].decode()
    at += 1 + size
    model_id = bid.split("/")[1]
    return model_id, bid, subject, blob[at : at + NONCE_BYTES], blob[at + NONCE_BYTES :]


def subject_keys(settings: Settings, model_id: uuid.UUID | str) -> SubjectKeys:
    return SubjectKeys(keys_for(settings), model_id)


def seal_payload(keys: SubjectKeys, subject: str, payload: dict[str, Any]) -> dict[str, str]:
    """A record's payload as stored: sealed under the subject's key (JSON-able)."""
    [sealed] = seal_payloads(keys, [(subject, payload)])
    return sealed


def seal_payloads(
    keys: SubjectKeys, items: Iterable[tuple[str, dict[str, Any]]]
) -> list[dict[str, str]]:
    """``seal_payload`` over many (subject, payload) pairs, as ingestion seals them.

    The plaintext is compact JSON from orjson (any JSON reader opens it; floats keep their
    shortest round-trip form, so a record opens to the very values it was ingested with):
    encoding was most of what sealing cost a record, and the stdlib encoder takes ~5x longer."""
    blobs = keys.seal_many((subject, _compact_json(payload)) for subject, payload in items)
    return [{SEALED_FIELD: b64encode(blob).decode("ascii")} for blob in blobs]


def _compact_json(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        # Text orjson refuses (a lone surrogate from an escaped JSON string): the stdlib
        # encoder escapes it, as every payload was written before.
        return json.dumps(payload, separators=(",", ":")).encode()


class PayloadReader:
    """Opens stored payloads of any model (sealed or, when written with encryption off,
    plain); one reader caches each bundle it loads."""

    def __init__(self, settings: Settings) -> None:
        self.keys = keys_for(settings)
        self._models: dict[str, SubjectKeys] = {}

    def open(self, payload: dict[str, Any]) -> dict[str, Any]:
        sealed = payload.get(SEALED_FIELD)
        if sealed is None:
            return payload
        model, bid, subject, nonce, body = _split(base64.b64decode(sealed))
        keys = self._models.get(model)
        if keys is None:
            keys = self._models[model] = SubjectKeys(self.keys, model)
        opened: dict[str, Any] = json.loads(keys._open(bid, subject, nonce, body))
        return opened
