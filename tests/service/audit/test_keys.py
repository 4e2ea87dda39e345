"""Event keys: the newest authenticates, every listed key verifies (rotation); a MAC is bound
to its event's hash; production refuses to run without keys of its own."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.audit.keys import Keyring, MacKeyMissing, keyring_from_settings, parse_keys


def _key(byte: int) -> str:
    return base64.b64encode(bytes([byte]) * 32).decode()


def test_rotation_newest_signs_all_verify() -> None:
    old = parse_keys(f"k1={_key(1)}", ",")
    rotated = parse_keys(f"k1={_key(1)},k2={_key(2)}", ",")
    before = old.mac("a" * 64)
    after = rotated.mac("a" * 64)
    assert before.startswith("k1:") and after.startswith("k2:")
    assert rotated.check("a" * 64, before) and rotated.check("a" * 64, after)
    assert not old.check("a" * 64, after)  # a key the verifier does not hold
    # Bound to the hash: the same MAC on another event fails.
    assert not rotated.check("b" * 64, after)
    assert not rotated.check("a" * 64, None) and not rotated.check("a" * 64, "k2:00")


def test_key_files_and_weak_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# event keys\nk1 {_key(1)}\nk2 {_key(2)}\n")
    settings = SimpleNamespace(
        audit_mac_keys=None, audit_mac_key_file=path, environment="production", data_dir=tmp_path
    )
    assert keyring_from_settings(settings).current_id == "k2"
    with pytest.raises(ValueError):
        Keyring((("k1", b"short"),))
    settings.audit_mac_key_file = None
    with pytest.raises(MacKeyMissing):
        keyring_from_settings(settings)
    settings.environment = "development"
    first = keyring_from_settings(settings)
    assert keyring_from_settings(settings) == first  # generated once, then read back
    assert oct((tmp_path / "audit-mac.keys").stat().st_mode)[-3:] == "600"


def test_rows_from_before_event_keys_are_accepted_only_up_to_the_set_sequence() -> None:
    ring = Keyring((("k1", bytes(32)),), legacy_through=10)
    assert ring.accepts_missing(10) and not ring.accepts_missing(11)
    assert not Keyring((("k1", bytes(32)),)).accepts_missing(1)
