"""Keyed hashing of subject identifiers, encryption of stored forget content, API tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata

from cryptography.fernet import Fernet, InvalidToken

from service.core.config import Settings


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


def new_api_token() -> str:
    return "lethe_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
