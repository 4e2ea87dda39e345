"""A host's id: from settings, else made once in its data folder (0600) and kept."""

from __future__ import annotations

import stat
from pathlib import Path

from service.core.config import Settings
from service.core.hosts import HOST_ID_FILE, host_id


def test_the_id_is_made_once_per_data_folder_and_kept(tmp_path: Path) -> None:
    a = Settings(data_dir=tmp_path / "a", environment="test")
    b = Settings(data_dir=tmp_path / "b", environment="test")
    first = host_id(a)
    assert first.startswith("host-") and host_id(a) == first != host_id(b)
    kept = tmp_path / "a" / HOST_ID_FILE
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "a").iterdir()] == [HOST_ID_FILE]  # no staged file left


def test_settings_name_the_host(tmp_path: Path) -> None:
    named = Settings(data_dir=tmp_path, host_id="api-eu-1", environment="test")
    assert host_id(named) == "api-eu-1" and not (tmp_path / HOST_ID_FILE).exists()
