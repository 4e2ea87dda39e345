"""Envelope encryption with data keys that can be destroyed (crypto-shredding).

Each request (and anything else that owns personal data) gets a random 256-bit data key. What
lethe stores for it is sealed with AES-GCM under that key; the data key itself is kept only
*wrapped* (AES-GCM under a key-encryption key, KEK, from settings) in a **key store outside the
database**, one object per key. Destroying the key object makes every copy of the sealed bytes
unreadable at once: table rows, page free space, WAL segments, replicas and database backups all
hold only ciphertext, and a backup plus the KEK still lacks the data key.

``KeyStore`` is the interface a KMS could implement (put / get / destroy a wrapped key by id);
``ArtifactKeyStore`` keeps the objects in a folder or an fsspec bucket. The KEKs form a
``Keyring``: several key ids, the first wraps new keys, the others still unwrap (rotation;
``Keys.rewrap`` moves a key to the current KEK).

A sealed blob names its key: ``LK1`` · key-id length · key id · 12-byte nonce · ciphertext. The
key id is also the AES-GCM associated data, so a blob cannot be moved under another key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from models.artifacts import ArtifactNotFound, ArtifactStore, open_store
from service.core.config import Settings

MAGIC = b"LK1"
NONCE_BYTES = 12
KEY_PREFIX = "keys/"


class KeyDestroyed(LookupError):
    """The data key of a sealed blob no longer exists: its content is gone for good."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"data key {key_id} has been destroyed")
        self.key_id = key_id


class KeyStore(Protocol):
    """Where wrapped data keys live, outside the database (a KMS can implement this)."""

    def put(self, key_id: str, wrapped: bytes) -> None: ...

    def get(self, key_id: str) -> bytes:
        """The wrapped key; ``KeyDestroyed`` when there is none."""
        ...

    def exists(self, key_id: str) -> bool: ...

    def destroy(self, key_id: str) -> bool:
        """Remove the key object (every stored version of it); whether one was there."""
        ...


class ArtifactKeyStore:
    """One object per wrapped key under ``keys/`` of a folder or an fsspec URL."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def put(self, key_id: str, wrapped: bytes) -> None:
        self.store.put(KEY_PREFIX + key_id, wrapped)

    def get(self, key_id: str) -> bytes:
        try:
            return self.store.get(KEY_PREFIX + key_id)
        except ArtifactNotFound:
            raise KeyDestroyed(key_id) from None

    def exists(self, key_id: str) -> bool:
        return self.store.exists(KEY_PREFIX + key_id)

    def destroy(self, key_id: str) -> bool:
        return self.store.delete(KEY_PREFIX + key_id)


@dataclass(frozen=True)
class Keyring:
    """Key-encryption keys by id; ``current`` wraps new data keys, all of them unwrap."""

    current: str
    keks: dict[str, bytes]

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        return cls.from_spec(settings.key_encryption_keys, settings.encryption_key)

    @classmethod
    def from_spec(cls, keks: str | None, encryption_key: str) -> Keyring:
        spec = (keks or "").strip()
        if not spec:
            # None configured: one KEK derived from the encryption key (required outside
            # development), so a deployment that sets nothing new still wraps its keys.
            derived = hashlib.sha256(b"lethe-kek:" + encryption_key.encode()).digest()
            return cls(current="kek0", keks={"kek0": derived})
        ring: dict[str, bytes] = {}
        for part in spec.split(","):
            kid, _, encoded = part.strip().partition(":")
            raw = base64.b64decode(encoded)
            if not kid or len(raw) != 32:
                raise ValueError("each key-encryption key is <id>:<base64 of 32 bytes>")
            ring[kid] = raw
        return cls(current=next(iter(ring)), keks=ring)


class _KeyCache:
    """Unwrapped data keys for a short while (a process reading many blobs of one request);
    ``destroy`` drops its own entry, other processes' entries expire after ``ttl`` seconds."""

    def __init__(self, ttl: float, size: int = 4096) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_id: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key_id)
            if item is None or time.monotonic() - item[0] > self.ttl:
                self._items.pop(key_id, None)
                return None
            return item[1]

    def put(self, key_id: str, key: bytes) -> None:
        with self._lock:
            self._items[key_id] = (time.monotonic(), key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, key_id: str) -> None:
        with self._lock:
            self._items.pop(key_id, None)


class Keys:
    """Create, use and destroy data keys: the one place lethe's stored content is sealed."""

    def __init__(self, keyring: Keyring, store: KeyStore, cache_seconds: float = 5.0) -> None:
        self.keyring, self.store = keyring, store
        self._cache = _KeyCache(cache_seconds)

    def create(self, key_id: str) -> None:
        """A new random data key under ``key_id`` (kept if one exists: filing is idempotent)."""
        if self.store.exists(key_id):
            return
        data_key = AESGCM.generate_key(bit_length=256)
        self.store.put(key_id, self._wrap(key_id, data_key, self.keyring.current))
        self._cache.put(key_id, data_key)

    def exists(self, key_id: str) -> bool:
        return self.store.exists(key_id)

    def destroy(self, key_id: str) -> bool:
        self._cache.drop(key_id)
        return self.store.destroy(key_id)

    def rewrap(self, key_id: str) -> bool:
        """Wrap ``key_id`` under the current KEK (rotation); False when it was already."""
        stored = json.loads(self.store.get(key_id))
        if stored["kek"] == self.keyring.current:
            return False
        self.store.put(key_id, self._wrap(key_id, self._data_key(key_id), self.keyring.current))
        return True

    def seal(self, key_id: str, plaintext: bytes) -> bytes:
        kid = key_id.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._data_key(key_id)).encrypt(nonce, plaintext, kid)
        return MAGIC + bytes([len(kid)]) + kid + nonce + sealed

    def open(self, blob: bytes) -> bytes:
        key_id, nonce, sealed = split_blob(blob)
        try:
            return AESGCM(self._data_key(key_id)).decrypt(nonce, sealed, key_id.encode())
        except InvalidTag as exc:
            raise ValueError("stored content does not match its key") from exc

    def digest(self, key_id: str, purpose: str, text: str) -> str:
        """A keyed hash under a sub-key of the data key: equal texts match while the key
        exists; once it is destroyed nobody can test a guess against the hash."""
        sub = hmac.new(self._data_key(key_id), f"lethe:{purpose}".encode(), hashlib.sha256)
        return hmac.new(sub.digest(), text.encode(), hashlib.sha256).hexdigest()

    def _data_key(self, key_id: str) -> bytes:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        stored = json.loads(self.store.get(key_id))
        kek = self.keyring.keks.get(stored["kek"])
        if kek is None:
            raise ValueError(f"key-encryption key {stored['kek']} is not configured")
        data_key = AESGCM(kek).decrypt(
            base64.b64decode(stored["nonce"]), base64.b64decode(stored["wrapped"]), key_id.encode()
        )
        self._cache.put(key_id, data_key)
        return data_key

    def _wrap(self, key_id: str, data_key: bytes, kek_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        wrapped = AESGCM(self.keyring.keks[kek_id]).encrypt(nonce, data_key, key_id.encode())
        body = {
            "kek": kek_id,
            "nonce": base64.b64encode(nonce).decode(),
            "wrapped": base64.b64encode(wrapped).decode(),
        }
        return json.dumps(body).encode()


def is_sealed(blob: bytes) -> bool:
    return bytes(blob[:3]) == MAGIC


def split_blob(blob: bytes) -> tuple[str, bytes, bytes]:
    """(key id, nonce, ciphertext) of a sealed blob."""
    blob = bytes(blob)
    if not is_sealed(blob):
        raise ValueError("not a sealed blob")
    size = blob[3]
    key_id = blob[4 : 4 + size].decode()
    nonce = blob[4 + size : 4 + size + NONCE_BYTES]
    return key_id, nonce, blob[4 + size + NONCE_BYTES :]


def key_id_of(blob: bytes) -> str | None:
    return split_blob(blob)[0] if is_sealed(blob) else None


def request_key_id(request_id: object) -> str:
    return f"req-{request_id}"


def keystore_location(settings: Settings) -> str:
    return settings.keystore_url or settings.artifact_location


@lru_cache(maxsize=8)
def _keys_at(location: str, keks: str | None, encryption_key: str, cache_seconds: float) -> Keys:
    keyring = Keyring.from_spec(keks, encryption_key)
    return Keys(keyring, ArtifactKeyStore(open_store(location)), cache_seconds)


def keys_for(settings: Settings) -> Keys:
    """The process's ``Keys`` for these settings (one key cache per key store)."""
    return _keys_at(
        keystore_location(settings),
        settings.key_encryption_keys,
        settings.encryption_key,
        settings.key_cache_seconds,
    )
