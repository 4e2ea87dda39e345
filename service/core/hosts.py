"""This host's id: the name under which a process with its own data folder (an API server or a
worker) registers, so that an erasure can ask it to delete its local copies of erased weights.

From settings when given, else made once and kept in the data folder: every process sharing a
data folder shares its local copies, so they are one host. Random, never personal data."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from service.core.config import Settings

HOST_ID_FILE = "host-id"


def host_id(settings: Settings) -> str:
    if settings.host_id:
        return settings.host_id
    return _kept_id(Path(settings.data_dir).resolve())


@lru_cache(maxsize=8)
def _kept_id(data_dir: Path) -> str:
    path = data_dir / HOST_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = f"host-{secrets.token_hex(6)}"
    staged = data_dir / f".{HOST_ID_FILE}-{made}"
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(made + "\n")
    try:
        # Linked whole, exclusively: two processes starting together on one folder agree on
        # the first id, and neither reads a half-written one.
        os.link(staged, path)
    except FileExistsError:
        made = path.read_text().strip()
    finally:
        staged.unlink()
    return made
