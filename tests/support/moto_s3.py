"""A versioned bucket on moto's S3 server (a real HTTP endpoint), for processes of a test."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Bucket:
    client: Any  # boto3's S3 client
    name: str
    env: dict[str, str]  # what a process needs to reach it

    def every_version(self, prefix: str = "") -> list[dict[str, Any]]:
        listed = self.client.list_object_versions(Bucket=self.name, Prefix=prefix)
        return list(listed.get("Versions", [])) + list(listed.get("DeleteMarkers", []))

    def read(self, version: dict[str, Any]) -> bytes:
        body = self.client.get_object(
            Bucket=self.name, Key=version["Key"], VersionId=version["VersionId"]
        )
        return bytes(body["Body"].read())


@contextmanager
def versioned_bucket() -> Iterator[Bucket]:
    """A fresh versioned bucket; this process's environment points at it while it lasts."""
    moto_server = pytest.importorskip("moto.server")
    import boto3
    import s3fs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    name = f"lethe-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    # s3fs keeps one filesystem per set of options (the endpoint comes from the environment):
    # none may outlive this server, none from before may point elsewhere.
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield Bucket(client, name, env)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
