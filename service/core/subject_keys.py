"""A data key per (model, data subject) for training records: an erasure destroys the subject's
key, so every copy of their records (free space in the table's pages, WAL, backups) is shredded
even before VACUUM reaches it.

Keys are kept in the key store (``service.core.keys``) in bundles: a subject's key lives in
bundle ``subjects/<model id>/<b>`` where ``b`` is one of 256 buckets picked from the subject's
keyed hash, the whole bundle sealed (AES-GCM) under the current key-encryption key. Ingesting
100,000 records writes 256 objects, not one per subject; destroying a key rewrites its bundle
without it (the old object is replaced; callers serialise rewrites of a model's bundles).

A sealed record names its bundle and subject: ``LS1`` · bundle-id length · bundle id ·
subject length · subject · 12-byte nonce · ciphertext (the subject is the associated data).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import uuid
from base64 import b64encode
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.core.config import Settings
from service.core.keys import NONCE_BYTES, KeyDestroyed, Keys, keys_for

MAGIC = b"LS1"
SEALED_FIELD = "lethe_sealed"


def bundle_id(model_id: uuid.UUID | str, subject: str) -> str:
    # subject refs are "sub_<hex>": two hex digits give 256 buckets of even size.
    return f"subjects/{model_id}/{subject[-2:]}"


class SubjectKeys:
    """The per-subject keys of one model: create at ingestion, open records, destroy."""

    def __init__(self, keys: Keys, model_id: uuid.UUID | str) -> None:
        self.keys, self.model_id = keys, str(model_id)
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
        changed = set()
        missing = [
            s for s in dict.fromkeys(subjects) if s not in self._load(bundle_id(self.model_id, s))
        ]
        fresh = os.urandom(32 * len(missing))  # one read of the system's random source
        for i, subject in enumerate(missing):
            bid = bundle_id(self.model_id, subject)
            self._load(bid)[subject] = fresh[32 * i : 32 * (i + 1)]
            changed.add(bid)
        for bid in sorted(changed):
            self._save(bid)

    def seal(self, subject: str, plaintext: bytes) -> bytes:
        sealer = self._sealers.get(subject)
        if sealer is None:
            sealer = self._sealer(subject)
        cipher, header, aad = sealer
        nonce = self._prefix + next(self._count).to_bytes(4, "big")
        return b"".join((header, nonce, cipher.encrypt(nonce, plaintext, aad)))

    def _sealer(self, subject: str) -> tuple[AESGCM, bytes, bytes]:
        """A subject's cipher with the header and associated data of its records, built once:
        ingestion seals every record through here, so nothing per record is built twice."""
        bid = bundle_id(self.model_id, subject)
        cipher = self._cipher(bid, subject)
        if cipher is None:
            raise KeyDestroyed(f"{bid}:{subject}")
        b, s = bid.encode(), subject.encode()
        sealer = (cipher, MAGIC + bytes([len(b)]) + b + bytes([len(s)]) + s, s)
        self._sealers[subject] = sealer
        return sealer

    def open(self, blob: bytes) -> bytes:
        bid, subject, nonce, body = _split(blob)
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


def _split(blob: bytes) -> tuple[str, str, bytes, bytes]:
    blob = bytes(blob)
    if blob[:3] != MAGIC:
        raise ValueError("not a sealed record")
    at = 3
    size = blob[at]
    bid = blob[at + 1 : at + 1 + size].decode()
    at += 1 + size
    size = blob[at]
    subject = blob[at + 1 : at + 1 + size].decode()
    at += 1 + size
    return bid, subject, blob[at : at + NONCE_BYTES], blob[at + NONCE_BYTES :]


def subject_keys(settings: Settings, model_id: uuid.UUID | str) -> SubjectKeys:
    return SubjectKeys(keys_for(settings), model_id)


# One encoder for every payload: json.dumps with options builds a new one per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def seal_payload(keys: SubjectKeys, subject: str, payload: dict[str, Any]) -> dict[str, str]:
    """A record's payload as stored: sealed under the subject's key (JSON-able)."""
    blob = keys.seal(subject, _COMPACT.encode(payload).encode())
    return {SEALED_FIELD: b64encode(blob).decode("ascii")}


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
        blob = base64.b64decode(sealed)
        model = _split(blob)[0].split("/")[1]
        keys = self._models.setdefault(model, SubjectKeys(self.keys, model))
        opened: dict[str, Any] = json.loads(keys.open(blob))
        return opened
