"""Settings: production refuses to start without an audit signing key, event keys, a
checkpoint location, with the development
keys, or with console cookies that are not Secure."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.core.config import Settings


def test_production_requires_a_signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LETHE_AUDIT_MAC_KEYS", raising=False)  # the suite's own
    base: dict[str, Any] = {
        "environment": "production",
        "secret_key": "s" * 32,
        "encryption_key": "ZmFrZS1mZXJuZXQta2V5LWZvci10ZXN0cy0zMmJ5dGU=",
        "database_url": "postgresql+psycopg://x@127.0.0.1/x",
    }
    with pytest.raises(ValidationError, match="AUDIT_SIGNING_KEY"):
        Settings(**base)
    with pytest.raises(ValidationError, match="AUDIT_MAC_KEYS"):
        Settings(**base, audit_signing_key="k")
    with pytest.raises(ValidationError, match="AUDIT_CHECKPOINT_URL"):
        Settings(**base, audit_signing_key="k", audit_mac_keys="k1=AAAA")
    complete = Settings(
        **base, audit_signing_key="k", audit_mac_keys="k1=AAAA", audit_checkpoint_url="s3://b/c"
    )
    assert complete.audit_signing_key == "k"


def test_production_refuses_development_keys_and_plain_cookies() -> None:
    base: dict[str, Any] = {
        "environment": "production",
        "secret_key": "s" * 32,
        "encryption_key": "ZmFrZS1mZXJuZXQta2V5LWZvci10ZXN0cy0zMmJ5dGU=",
        "database_url": "postgresql+psycopg://x@127.0.0.1/x",
        "audit_signing_key": "k",
        "audit_mac_keys": "k1=AAAA",
        "audit_checkpoint_url": "/srv/checkpoints",
    }
    with pytest.raises(ValidationError, match="COOKIE_SECURE"):
        Settings(**base, console_cookie_secure=False)
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(**{**base, "secret_key": "dev-only-secret-key-change-me"})
    assert Settings(**base).secure_cookies
