"""Byte-blob storage for model artifacts (checkpoints, manifests), keyed by slash-separated names.

Two backends share one protocol: a local folder (the default) and any fsspec URL (S3-compatible
buckets in production, ``memory://`` in tests). Keys look like relative POSIX paths,
e.g. ``checkpoints/3f2a...``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "FsspecArtifactStore",
    "LocalArtifactStore",
    "open_store",
    "validate_key",
]

# Writers stage their bytes under names with this prefix; keys may not start a segment with "."
# so a staged file can never be mistaken for an artifact.
_TEMP_PREFIX = ".tmp-"


class ArtifactNotFound(KeyError):
    """No artifact is stored under the requested key."""


@runtime_checkable
class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``; storing the same key again replaces it."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise ``ArtifactNotFound`` when there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool:
        """Remove ``key``; return whether something was removed."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """All stored keys starting with ``prefix`` (a plain string prefix), sorted."""
        ...


def validate_key(key: str) -> str:
    """Reject keys that could escape the store root or collide with staged writes."""
    if not isinstance(key, str) or not key:
        raise ValueError("artifact key must be a non-empty string")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"artifact key contains a forbidden character: {key!r}")
    segments = key.split("/")
    for segment in segments:
        if not segment:
            raise ValueError(f"artifact key has an empty path segment: {key!r}")
        if segment.startswith("."):
            raise ValueError(f"artifact key segments may not start with '.': {key!r}")
    return key


class LocalArtifactStore:
    """Artifacts as files under ``root``; a key's slashes become sub-folders.

    Writes go to a uniquely named temporary file in the target folder followed by
    ``os.replace``, which is atomic on POSIX and Windows: concurrent readers (other processes
    too) see either the old bytes or the new ones, never a torn file.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        # Artifacts are derived from personal data: folders 0700, files 0600 (mkstemp).
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def put(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staged, target)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        return True

    def keys(self, prefix: str = "") -> list[str]:
        # Only walk the folder the prefix points into; a partial last segment filters names.
        folder, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not start.is_dir():
            return []
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            relative_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if relative_dir == "." else f"{relative_dir}/{name}"
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)


class FsspecArtifactStore:
    """Artifacts on any fsspec filesystem, e.g. ``s3://bucket/prefix`` or ``memory://name``.

    Object stores replace whole objects atomically on upload, so ``put`` writes in one call
    instead of staging; use ``LocalArtifactStore`` for local folders. Other processes write to
    the same bucket, so listings are never answered from fsspec's cache (s3fs keeps one per
    process, which would otherwise hide their writes and deletes).
    ``storage_options`` go to the filesystem (e.g. ``client_kwargs={"endpoint_url": ...}``);
    s3fs also reads ``AWS_ENDPOINT_URL`` and the usual credentials from the environment.
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.url = url
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self._fs: Any = fs
        self._root = str(root).rstrip("/")

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.url!r})"

    def _path(self, key: str) -> str:
        return f"{self._root}/{validate_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        parent = path.rpartition("/")[0]
        if parent:
            self._fs.makedirs(parent, exist_ok=True)
        self._fs.pipe_file(path, bytes(data))

    def get(self, key: str) -> bytes:
        try:
            return bytes(self._fs.cat_file(self._path(key)))
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFound(key) from None

    def _fresh(self, path: str) -> str:
        self._fs.invalidate_cache(path)
        return path

    def exists(self, key: str) -> bool:
        return bool(self._fs.isfile(self._fresh(self._path(key))))

    def delete(self, key: str) -> bool:
        """Remove ``key``; on a versioned S3 bucket every stored version and delete marker of
        it too (a plain delete there only hides the bytes behind a marker)."""
        path = self._fresh(self._path(key))
        if self._versioned():
            return self._delete_versions(path)
        if not self._fs.isfile(path):
            return False
        try:
            self._fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def _versioned(self) -> bool:
        """Whether the bucket keeps object versions (S3: versioning enabled or suspended)."""
        if not hasattr(self, "_versioning"):
            self._versioning = False
            if hasattr(self._fs, "call_s3"):
                bucket = self._root.split("/", 1)[0]
                status = self._fs.call_s3("get_bucket_versioning", Bucket=bucket).get("Status")
                self._versioning = status in ("Enabled", "Suspended")
        return self._versioning

    def _delete_versions(self, path: str) -> bool:
        bucket, _, key = path.partition("/")
        listed = self._fs.call_s3("list_object_versions", Bucket=bucket, Prefix=key)
        found = [
            v
            for v in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
            if v["Key"] == key
        ]
        for version in found:
            self._fs.call_s3(
                "delete_object", Bucket=bucket, Key=key, VersionId=version["VersionId"]
            )
        self._fs.invalidate_cache(path)
        return any(v in listed.get("Versions", []) for v in found)

    def check_version_deletion(self) -> None:
        """On a versioned bucket, prove that every version of an object can be deleted (a
        probe written twice, then deleted): a store where "deleted" leaves old versions
        readable is refused (``PermissionError``). Nothing to check on other stores."""
        if not self._versioned():
            return
        probe = f"lethe-probe/{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self.put(probe, b"probe")
            self.put(probe, b"probe")
            self.delete(probe)
            left = self.versions(probe)
        except Exception as exc:  # a denied call: the same answer as a version left behind
            raise PermissionError(
                f"{self.url} keeps object versions and lethe cannot delete them all"
            ) from exc
        if left:
            raise PermissionError(
                f"{self.url} keeps object versions and lethe cannot delete them all"
            )

    def versions(self, key: str) -> int:
        """How many stored versions and delete markers ``key`` has (0 when the bucket keeps
        no versions and the key is gone)."""
        path = self._fresh(self._path(key))
        if not self._versioned():
            return int(self._fs.isfile(path))
        bucket, _, name = path.partition("/")
        listed = self._fs.call_s3("list_object_versions", Bucket=bucket, Prefix=name)
        every = [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
        return sum(1 for v in every if v["Key"] == name)

    def keys(self, prefix: str = "") -> list[str]:
        folder = prefix.rpartition("/")[0]
        start = self._fresh(f"{self._root}/{folder}" if folder else self._root)
        try:
            paths = self._fs.find(start, withdirs=False)
        except FileNotFoundError:
            return []
        found: list[str] = []
        for path in paths:
            path = str(path)
            if not path.startswith(self._root + "/"):
                continue
            key = path[len(self._root) + 1 :]
            if key.startswith(prefix) and not any(s.startswith(".") for s in key.split("/")):
                found.append(key)
        return sorted(found)


def open_store(url_or_path: str | Path) -> ArtifactStore:
    """A local store for plain paths and ``file://`` URLs, an fsspec store for other URLs."""
    text = str(url_or_path)
    if isinstance(url_or_path, Path) or "://" not in text:
        return LocalArtifactStore(Path(text))
    if text.startswith("file://"):
        return LocalArtifactStore(Path(text[len("file://") :]))
    return FsspecArtifactStore(text)
