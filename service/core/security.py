"""Keyed hashing of subject identifiers, encryption of stored content, API tokens.

Personal data of a request is sealed under the request's own data key (``seal_for`` with its
key id; ``service.core.keys``), so destroying that key shreds every copy. Content without a
key id (console secrets, drafts, rows written before per-request keys) uses the service's
Fernet key; ``open_sealed`` reads either."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata

from cryptography.fernet import Fernet, InvalidToken

from service.core.config import Settings
from service.core.keys import is_sealed, keys_for


def normalise_identifier(raw: str) -> str:
    # The same person filed twice with different spacing or case must map to one reference.
    return unicodedata.normalize("NFKC", raw).strip().casefold()


def subject_ref(settings: Settings, raw_identifier: str) -> str:
    """Keyed hash (HMAC-SHA256) of a subject identifier: the only form lethe stores."""
    digest = hmac.new(
        settings.secret_key.encode(),
        normalise_identifier(raw_identifier).encode(),
        hashlib.sha256,
    ).hexdigest()
    return f"sub_{digest[:40]}"


def encrypt(settings: Settings, plaintext: bytes) -> bytes:
    return Fernet(settings.encryption_key.encode()).encrypt(plaintext)


def decrypt(settings: Settings, token: bytes) -> bytes:
    try:
        return Fernet(settings.encryption_key.encode()).decrypt(token)
    except InvalidToken as exc:  # wrong key: refuse loudly rather than return garbage
        raise ValueError("stored content cannot be decrypted with the configured key") from exc


def seal_for(settings: Settings, key_id: str | None, plaintext: bytes) -> bytes:
    """Seal under the data key ``key_id`` (the service key when there is none)."""
    if key_id is None:
        return encrypt(settings, plaintext)
    return keys_for(settings).seal(key_id, plaintext)


def open_sealed(settings: Settings, blob: bytes) -> bytes:
    """Open what ``seal_for`` sealed; ``KeyDestroyed`` once its data key is gone."""
    if is_sealed(blob):
        return keys_for(settings).open(blob)
    return decrypt(settings, bytes(blob))


def keyed_digest(settings: Settings, key_id: str | None, purpose: str, text: str) -> str:
    """The keyed hash audit events carry instead of a text or an identifier: under a sub-key
    of the request's data key when there is one (unverifiable once it is destroyed), else
    under a key derived from the service's secret key. Never a plain SHA-256."""
    if key_id is not None:
        return keys_for(settings).digest(key_id, purpose, text)
    secret = settings.secret_key.encode()
    key = hmac.new(secret, f"lethe:{purpose}".encode(), hashlib.sha256).digest()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def new_api_token() -> str:
    return "lethe_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
