"""The fsspec artifact store against a real S3 protocol endpoint: moto's server on loopback,
reached through s3fs over HTTP, as a deployment would reach an S3-compatible bucket."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from models.artifacts import ArtifactNotFound, FsspecArtifactStore, open_store

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
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
def bucket_url(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import boto3

    for name, value in _CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # How a deployment points s3fs (botocore) at a non-AWS endpoint: no code change needed.
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    bucket = f"lethe-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/artifacts"


def test_contract_over_s3(bucket_url: str) -> None:
    store = open_store(bucket_url)
    assert isinstance(store, FsspecArtifactStore)
    assert store.keys() == []
    assert not store.exists("checkpoints/a")
    store.put("checkpoints/a", b"one")
    store.put("checkpoints/a", b"two")
    assert store.get("checkpoints/a") == b"two"
    for key in ["checkpoints/ab1", "manifests/x/y", "top"]:
        store.put(key, key.encode())
    assert store.keys() == ["checkpoints/a", "checkpoints/ab1", "manifests/x/y", "top"]
    assert store.keys("checkpoints/a") == ["checkpoints/a", "checkpoints/ab1"]
    assert store.keys("manifests/") == ["manifests/x/y"]
    assert store.keys("nothing/") == []
    assert store.delete("checkpoints/a") is True
    assert store.delete("checkpoints/a") is False
    assert not store.exists("checkpoints/a")
    with pytest.raises(ArtifactNotFound):
        store.get("checkpoints/a")


def test_binary_payload_round_trips_unchanged(bucket_url: str) -> None:
    store = open_store(bucket_url)
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    store.put("checkpoints/big", payload)
    assert store.get("checkpoints/big") == payload


def test_writes_and_deletes_by_another_process_are_seen(bucket_url: str, endpoint: str) -> None:
    # The API and each worker hold their own store: one must never answer from a listing it
    # cached before another process wrote or deleted (fsspec shares one s3fs instance per
    # process, so "another process" is a separate S3 client here).
    import boto3

    other = boto3.client("s3", endpoint_url=endpoint)
    bucket, _, prefix = bucket_url.removeprefix("s3://").partition("/")
    reader = open_store(bucket_url)
    reader.put("checkpoints/mine", b"m")
    assert reader.keys("checkpoints/") == ["checkpoints/mine"]
    assert not reader.exists("checkpoints/k")
    other.put_object(Bucket=bucket, Key=f"{prefix}/checkpoints/k", Body=b"v")
    assert reader.keys("checkpoints/") == ["checkpoints/k", "checkpoints/mine"]
    assert reader.exists("checkpoints/k") and reader.get("checkpoints/k") == b"v"
    other.delete_object(Bucket=bucket, Key=f"{prefix}/checkpoints/k")
    assert reader.keys("checkpoints/") == ["checkpoints/mine"]
    assert not reader.exists("checkpoints/k")
    assert reader.delete("checkpoints/k") is False
    with pytest.raises(ArtifactNotFound):
        reader.get("checkpoints/k")


def test_explicit_storage_options_reach_the_filesystem(
    endpoint: str, bucket_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    store = FsspecArtifactStore(bucket_url, client_kwargs={"endpoint_url": endpoint})
    store.put("x/y", b"z")
    assert store.get("x/y") == b"z"


def test_on_a_versioned_bucket_delete_removes_every_version(bucket_url: str, endpoint: str) -> None:
    import boto3

    bucket = bucket_url.removeprefix("s3://").split("/")[0]
    client = boto3.client("s3", endpoint_url=endpoint)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = open_store(bucket_url)
    assert isinstance(store, FsspecArtifactStore)
    for content in (b"v1 saw the person", b"v2 saw the person"):
        store.put("keys/req-1", content)
    store.put("keys/req-10", b"another key, kept")
    assert store.versions("keys/req-1") == 2
    assert store.delete("keys/req-1") and not store.exists("keys/req-1")
    assert store.versions("keys/req-1") == 0  # no old version, no delete marker
    listed = client.list_object_versions(Bucket=bucket, Prefix="artifacts/keys/req-1")
    names = [v["Key"] for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])]
    assert names == ["artifacts/keys/req-10"]
    assert store.get("keys/req-10") == b"another key, kept"
    assert not store.delete("keys/req-1")


def test_the_version_deletion_check_passes_where_lethe_can_delete_versions(
    bucket_url: str, endpoint: str
) -> None:
    import boto3

    store = open_store(bucket_url)
    assert isinstance(store, FsspecArtifactStore)
    store.check_version_deletion()  # not versioned: nothing to prove
    bucket = bucket_url.removeprefix("s3://").split("/")[0]
    client = boto3.client("s3", endpoint_url=endpoint)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    versioned = open_store(bucket_url)
    assert isinstance(versioned, FsspecArtifactStore)
    versioned.check_version_deletion()
    listed = client.list_object_versions(Bucket=bucket, Prefix="artifacts/lethe-probe")
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")  # the probe is gone
