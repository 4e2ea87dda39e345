"""The keys that authenticate audit events: HMAC-SHA256, kept outside the database.

Every event carries ``mac = "<key id>:<hex HMAC-SHA256(key, domain ‖ hash)>"``. The hash covers
the whole row including its sequence and the previous row's hash, so a row written by anyone
without a key, a changed row, and an older row's MAC replayed on a new sequence all fail.

Keys come from ``LETHE_AUDIT_MAC_KEYS`` (``kid=base64,kid=base64``), else from
``LETHE_AUDIT_MAC_KEY_FILE`` (one ``kid base64`` per line), else (development and test only) a
key generated once into the data folder. Rotation: add a key; the newest (last) authenticates new
events, every listed key verifies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_DOMAIN = b"lethe-audit-event-v1\n"
KEY_FILE_NAME = "audit-mac.keys"
_MIN_KEY_BYTES = 32


class MacKeyMissing(RuntimeError):
    """Production requires event keys that live outside the database."""


@dataclass(frozen=True)
class Keyring:
    """Named HMAC keys: the last one authenticates, all of them verify."""

    keys: tuple[tuple[str, bytes], ...]
    # Events up to this sequence were written before event keys existed (an upgraded
    # deployment): a missing MAC there is accepted; the chain and checkpoints still hold them.
    legacy_through: int = 0

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        for kid, key in self.keys:
            if not kid or ":" in kid or len(key) < _MIN_KEY_BYTES:
                raise ValueError("each event key needs an id without ':' and 32 bytes or more")

    @property
    def current_id(self) -> str:
        return self.keys[-1][0]

    def _primed(self) -> dict[str, Any]:
        # HMAC states keyed and fed the domain once; each event copies one (the hot path of
        # verifying a million events).
        primed: dict[str, Any] | None = self.__dict__.get("_primed_states")
        if primed is None:
            primed = {kid: hmac.new(key, _DOMAIN, hashlib.sha256) for kid, key in self.keys}
            object.__setattr__(self, "_primed_states", primed)
        return primed

    def _digest(self, kid: str, event_hash: str) -> str | None:
        state = self._primed().get(kid)
        if state is None:
            return None
        mac = state.copy()
        mac.update(event_hash.encode())
        return str(mac.hexdigest())

    def mac(self, event_hash: str) -> str:
        kid = self.keys[-1][0]
        return f"{kid}:{self._digest(kid, event_hash)}"

    def accepts_missing(self, seq: int) -> bool:
        return seq <= self.legacy_through

    def check(self, event_hash: str, mac: str | None) -> bool:
        if not mac or ":" not in mac:
            return False
        kid, _, digest = mac.partition(":")
        expected = self._digest(kid, event_hash)
        return expected is not None and hmac.compare_digest(expected, digest)


def parse_keys(text: str, separator: str) -> Keyring:
    """``kid=base64`` items separated by ``separator`` (the inline form uses ``,``, files a
    newline and ``kid base64``)."""
    pairs = []
    for item in text.replace("\n", separator).split(separator):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        kid, _, encoded = item.replace(" ", "=", 1).partition("=")
        pairs.append((kid.strip(), base64.b64decode(encoded.strip(), validate=True)))
    return Keyring(tuple(pairs))


def generate_key_file(path: Path) -> None:
    """A first event key in a file only its owner can read (development default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: processes starting together never read a
    # half-written file, and exactly one key wins (the others raise FileExistsError).
    fd, staged = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(f"k1 {base64.b64encode(secrets.token_bytes(32)).decode()}\n")
        os.link(staged, path)
    finally:
        os.unlink(staged)


def keyring_from_settings(settings: Any) -> Keyring:
    ring = _keys_from_settings(settings)
    legacy = int(getattr(settings, "audit_legacy_through", 0) or 0)
    return Keyring(ring.keys, legacy) if legacy else ring


def _keys_from_settings(settings: Any) -> Keyring:
    inline: str | None = settings.audit_mac_keys
    key_file: Path | None = settings.audit_mac_key_file
    if inline:
        return parse_keys(inline, ",")
    if key_file is not None:
        return parse_keys(Path(key_file).read_text(), "\n")
    if settings.environment == "production":
        raise MacKeyMissing("set LETHE_AUDIT_MAC_KEYS or LETHE_AUDIT_MAC_KEY_FILE")
    default = Path(settings.data_dir) / KEY_FILE_NAME
    with contextlib.suppress(FileExistsError):
        generate_key_file(default)
    return parse_keys(default.read_text(), "\n")


_cache: dict[tuple[Any, ...], Keyring] = {}


def current_keyring() -> Keyring:
    """The keyring of this process's settings (read once per configuration)."""
    from service.core.config import get_settings

    settings = get_settings()
    marker = (
        settings.audit_mac_keys,
        settings.audit_mac_key_file,
        str(settings.data_dir),
        settings.environment,
        settings.audit_legacy_through,
    )
    if marker not in _cache:
        _cache[marker] = keyring_from_settings(settings)
    return _cache[marker]
