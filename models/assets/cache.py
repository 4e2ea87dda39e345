"""Content-addressed cache folders for derived model directories.

A derived directory (materialised weights, a fine-tune) is named by a hash of everything it was
derived from, is written under a temporary name and renamed into place when complete, so a crash
midway never leaves a half-written directory that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

META_FILE = "lethe_meta.json"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    canon = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta


def cached_dir(target: Path, key: str, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Return `target` if it holds a finished build for `key`; otherwise build it atomically.

    `build(tmp)` writes the directory's files into `tmp` and returns metadata to record.
    """
    meta = read_meta(target)
    if meta is not None and meta.get("key") == key:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; workers under other users read the cache
    try:
        extra = build(tmp)
        (tmp / META_FILE).write_text(json.dumps({**extra, "key": key}, indent=2, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same build first: its result is as good as ours.
            done = read_meta(target)
            if done is None or done.get("key") != key:
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
