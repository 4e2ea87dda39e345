"""Write-once storage of audit checkpoints: one object per signed head, never replaced or removed.

A folder: each object is linked into place only if its name is free (``os.link`` fails on an
existing name, atomically) and is read-only. An S3 bucket: each object is written with Object
Lock retention in COMPLIANCE mode, which nobody (not the writer, not the account's root) can
shorten or lift, so the object's version can be neither deleted nor changed before it expires;
the bucket must be created with Object Lock enabled. Neither protects against root on the
folder's host (docs/THREAT_MODEL.md).
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from models.artifacts import validate_key


class WriteOnceStore(Protocol):
    def put_once(self, key: str, data: bytes) -> bool:
        """Store ``data`` under a free ``key``; return False (and change nothing) if taken."""
        ...

    def get(self, key: str) -> bytes: ...

    def keys(self, prefix: str = "") -> list[str]:
        """Stored keys starting with ``prefix``, sorted."""
        ...


class FolderStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def put_once(self, key: str, data: bytes) -> bool:
        target = self._path(key)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, staged = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(staged, 0o444)
            try:
                os.link(staged, target)  # exclusive: fails if the name is taken
            except FileExistsError:
                return False
            return True
        finally:
            Path(staged).unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def keys(self, prefix: str = "") -> list[str]:
        folder, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not start.is_dir():
            return []
        found = []
        for path in start.rglob("*"):
            if path.is_file() and not any(p.startswith(".") for p in path.parts[-1:]):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)


class ObjectLockStore:
    """An S3 bucket with Object Lock; endpoint and credentials as boto3 finds them
    (``AWS_ENDPOINT_URL`` for an S3-compatible store)."""

    def __init__(self, url: str, retention_days: int = 3650, client: Any = None) -> None:
        import boto3

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention = timedelta(days=retention_days)
        self.client = client or boto3.client("s3")

    def __repr__(self) -> str:
        return f"ObjectLockStore('s3://{self.bucket}/{self.prefix}')"

    def put_once(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        name = self.prefix + validate_key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
                raise
        self.client.put_object(
            Bucket=self.bucket,
            Key=name,
            Body=data,
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=datetime.now(UTC) + self.retention,
            ChecksumAlgorithm="SHA256",
        )
        return True

    def get(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        data: bytes = body.read()
        return data

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            found.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(found)


def open_checkpoint_store(location: str, retention_days: int = 3650) -> WriteOnceStore:
    """A folder path (or ``file://``), or ``s3://bucket/prefix``; nothing else is write-once."""
    if location.startswith("s3://"):
        return ObjectLockStore(location, retention_days)
    if "://" in location and not location.startswith("file://"):
        raise ValueError("the checkpoint store must be a folder or an s3:// bucket")
    return FolderStore(location.removeprefix("file://"))
