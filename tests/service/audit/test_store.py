"""Write-once checkpoint stores: a folder refuses to replace an object and keeps it read-only;
an S3 bucket with Object Lock (moto's server over HTTP) refuses to delete or change a
checkpoint's version, whoever asks."""

from __future__ import annotations

import os
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.audit.store import FolderStore, ObjectLockStore, open_checkpoint_store

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def test_folder_store_writes_once_and_read_only(tmp_path: Path) -> None:
    store = FolderStore(tmp_path)
    assert store.put_once("audit-checkpoints/1-a.json", b"first")
    assert not store.put_once("audit-checkpoints/1-a.json", b"second")
    assert store.get("audit-checkpoints/1-a.json") == b"first"
    path = tmp_path / "audit-checkpoints" / "1-a.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    if os.geteuid() != 0:  # root ignores file modes (not defended: docs/THREAT_MODEL.md)
        with pytest.raises(PermissionError):
            path.write_bytes(b"overwritten")
    assert store.keys("audit-checkpoints/") == ["audit-checkpoints/1-a.json"]
    assert not [p for p in (tmp_path / "audit-checkpoints").iterdir() if p.name.startswith(".")]


def test_only_folders_and_s3_are_write_once(tmp_path: Path) -> None:
    assert isinstance(open_checkpoint_store(str(tmp_path)), FolderStore)
    with pytest.raises(ValueError, match="s3"):
        open_checkpoint_store("memory://checkpoints")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def locked_bucket(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    import boto3

    for name, value in _CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    bucket = f"lethe-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return bucket, client


def test_object_lock_refuses_overwrite_and_delete(locked_bucket: tuple[str, Any]) -> None:
    from botocore.exceptions import ClientError

    bucket, client = locked_bucket
    store = ObjectLockStore(f"s3://{bucket}/lethe", retention_days=1)
    key = "audit-checkpoints/000000000000001-abc.json"
    assert store.put_once(key, b"signed head")
    assert not store.put_once(key, b"another head")  # the store itself never replaces
    assert store.keys("audit-checkpoints/") == [key]
    name = f"lethe/{key}"
    head = client.head_object(Bucket=bucket, Key=name)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    version = head["VersionId"]
    # Whoever holds the store's credentials cannot delete the locked version ...
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=name, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # ... and writing the name again only adds a version: the signed one stays readable.
    client.put_object(Bucket=bucket, Key=name, Body=b"forged")
    kept = client.get_object(Bucket=bucket, Key=name, VersionId=version)["Body"].read()
    assert kept == b"signed head"
