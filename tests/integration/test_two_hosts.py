"""Two API hosts, each with its own data folder, over one artifact store (a versioned bucket on
moto's S3 server), one database (also the broker, unless LETHE_TEST_BROKER_URL names Redis,
and the task-result store) and a real worker
(a third host, with a folder of its own).

A fine-tune learns a canary person; both API hosts serve it (each writes merged weights into
its own folder). An erasure filed on host A runs both ways (rules at once, then the exact
removal). Host B confirms deleting its copies when it next serves the model: its answer comes
from the new version and its folder holds no merged weights of the old one; the certificate
names the three hosts as confirmed, in its JSON and in plain words in the PDF. The request's
keys are destroyed as it ends; afterwards the canary is searched in plain text everywhere:
``pg_dump`` (broker tables and task results included; or every value Redis holds), the raw
data files and WAL, every version of every object in the bucket, every host's folder and every
process's log, the reports. The control keeps the keys (shredding off): the sealed copies still
open to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.hosts import HOST_ID_FILE
from service.core.keys import KeyDestroyed
from service.core.security import open_sealed
from service.core.subject_keys import PayloadReader
from service.db.tables import ErasureRequest, HostPurge, MlModel, ModelVersion, TrainingRecord
from service.stack.processes import free_port, worker_command
from tests.integration.worker_env import broker_from_env, worker_env
from tests.support.canary import Canary, held_in, pg_dump, raw_hits
from tests.support.db import fresh_database
from tests.support.generative_data import RETAINED, facts_of, generative_model_body
from tests.support.generative_data import TINY_FINETUNE as FINETUNE
from tests.support.moto_s3 import Bucket, versioned_bucket
from tests.support.pdf_tools import pdf_text

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("a", "b", "worker")


@dataclass
class Cluster:
    url: str
    bucket: Bucket
    root: Path
    tokens: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def folder(self, host: str) -> Path:
        return self.root / host

    def log(self, host: str) -> Path:
        return self.root / "logs" / f"{host}.log"

    def host_id(self, host: str) -> str:
        return (self.folder(host) / HOST_ID_FILE).read_text().strip()

    def env(self, host: str, **extra: str) -> dict[str, str]:
        env = worker_env(self.url, self.folder(host))
        env.update(self.bucket.env)
        env.update(
            PYTHONPATH=str(ROOT),
            LETHE_ARTIFACT_URL=f"s3://{self.bucket.name}/artifacts",
            LETHE_HOST_HEARTBEAT_SECONDS="1",
            LETHE_RETENTION_COMPLETED_DAYS="0",
        )
        env.update(extra)
        return env

    def start(self, host: str, **extra: str) -> None:
        self.folder(host).mkdir(exist_ok=True)
        if host == "worker":
            command = [*worker_command("requests,ml", 1, None), "-n", "worker@%h"]
        else:
            self.ports[host] = free_port()
            app = "service.app.factory:create_app"
            command = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1",
                       "--port", str(self.ports[host])]  # fmt: skip
        with open(self.log(host), "ab") as log:
            self.procs[host] = subprocess.Popen(
                command, env=self.env(host, **extra), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, host: str) -> None:
        proc = self.procs.pop(host)
        proc.terminate()
        proc.wait(timeout=60)

    def api(self, host: str) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.ports[host]}", timeout=120)

    def settings(self, **extra: Any) -> Settings:
        """What this test reads the stores with (the processes' secrets: the defaults)."""
        return Settings(
            database_url=self.url,
            artifact_url=f"s3://{self.bucket.name}/artifacts",
            data_dir=self.root / "test",
            environment="test",
            **extra,
        )

    def wait(self, what: str, done: Callable[[], Any], timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = done()
            if value:
                return value
            dead = {h: p.returncode for h, p in self.procs.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                tails = {h: self.log(h).read_text()[-3000:] for h in self.procs}
                pytest.fail(f"waiting for {what} (exited: {dead}, last: {value}): {tails}")
            time.sleep(0.3)


@pytest.fixture(scope="module")
def cluster(pg_server: str) -> Iterator[Cluster]:
    # Outside pytest's temp tree, which pytest may reset to 0700 while the processes run.
    root = Path(tempfile.mkdtemp(prefix="lethe-hosts-"))
    (root / "logs").mkdir()
    with versioned_bucket() as bucket, fresh_database(pg_server, prefix="lethe_hosts") as url:
        from service.api.tokens import create_token
        from service.db.session import session_factory, transaction

        cluster = Cluster(url, bucket, root)
        with transaction(session_factory(url)) as s:
            roles = ("dpo", "ml_engineer", "auditor")
            cluster.tokens = {r: create_token(s, f"hosts-{r}", r, actor="test") for r in roles}
        # Host B heartbeats once, as it starts: what it deletes later, it deletes as it serves.
        cluster.start("a")
        cluster.start("b", LETHE_HOST_HEARTBEAT_SECONDS="3600")
        cluster.start("worker")
        try:
            for host in ("a", "b"):
                cluster.wait(f"API {host}", lambda h=host: _healthy(cluster, h), timeout=180)
            yield cluster
        finally:
            for host in list(cluster.procs):
                cluster.stop(host)
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def _healthy(cluster: Cluster, host: str) -> bool:
    try:
        return cluster.api(host).get("/healthz").is_success
    except httpx.HTTPError:
        return False


def _h(cluster: Cluster, role: str) -> dict[str, str]:
    return {"authorization": f"Bearer {cluster.tokens[role]}"}


def _jsonl(canary: Canary) -> bytes:
    rows = [(name, q, a) for name in RETAINED for q, a in facts_of(name)]
    rows += [(canary.identifier, q, a) for q, a in canary.facts()]
    lines = [json.dumps({"subject": s, "question": q, "answer": a}) for s, q, a in rows]
    return ("\n".join(lines) + "\n").encode()


def _trained(cluster: Cluster, canary: Canary, tiny_lm: Path, retain: Path) -> None:
    a, ml = cluster.api("a"), _h(cluster, "ml_engineer")
    body = generative_model_body(canary.model, tiny_lm, retain)
    body["config"]["finetune"] = FINETUNE
    body["policy"]["strategy"] = "both"
    assert a.post("/v1/models", json=body, headers=ml).status_code == 201
    files = {"file": ("r.jsonl", _jsonl(canary), "application/jsonl")}
    r = a.post(f"/v1/models/{canary.model}/records", files=files, headers=ml)
    assert r.status_code == 201, r.text
    job = a.post(f"/v1/models/{canary.model}/train", headers=ml).json()

    def finished() -> dict[str, Any] | None:
        state = dict(a.get(f"/v1/jobs/{job['id']}", headers=ml).json())
        return state if state["status"] in ("done", "failed") else None

    done = cluster.wait("the fine-tune", finished)
    assert done["status"] == "done", done


def _generate(cluster: Cluster, host: str, canary: Canary) -> dict[str, Any]:
    prompt = {"prompt": facts_of(RETAINED[0])[0][0]}
    r = cluster.api(host).post(
        f"/v1/models/{canary.model}/generate", json=prompt, headers=_h(cluster, "ml_engineer")
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _erase(cluster: Cluster, canary: Canary) -> str:
    a, dpo = cluster.api("a"), _h(cluster, "dpo")
    body = {
        "subject_id": canary.identifier,
        "reason": f"letter from {canary.name}",
        "scope": [canary.model],
        "forget": {
            "names": [canary.name],
            "facts": [{"question": q, "answer": x} for q, x in canary.facts()],
        },
    }
    r = a.post("/v1/requests", json=body, headers=dpo)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _approve(cluster: Cluster, rid: str) -> dict[str, Any]:
    a, dpo = cluster.api("a"), _h(cluster, "dpo")
    assert a.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo).is_success

    def ended() -> dict[str, Any] | None:
        state = dict(a.get(f"/v1/requests/{rid}", headers=dpo).json())
        return state if state["status"] in ("completed", "failed") else None

    return dict(cluster.wait("the request to end", ended))


def _sealed(cluster: Cluster, rid: str, canary: Canary) -> tuple[list[bytes], list[dict[str, Any]]]:
    """What a backup taken now would hold: the request's sealed columns, the canary's records."""
    with Session(create_engine(cluster.url)) as s:
        request = s.get_one(ErasureRequest, uuid.UUID(rid))
        model_id = s.scalars(select(MlModel.id).where(MlModel.name == canary.model)).one()
        payloads = s.scalars(
            select(TrainingRecord.payload).where(
                TrainingRecord.model_id == model_id, TrainingRecord.payload.is_not(None)
            )
        ).all()
        blobs = [b for b in (request.forget_content, request.reason_encrypted) if b]
    reader = PayloadReader(cluster.settings())
    mine = [p for p in payloads if p and canary.found_in(json.dumps(reader.open(p)).encode())]
    return blobs, mine


def _checkpoint(cluster: Cluster, canary: Canary, number: int) -> str:
    with Session(create_engine(cluster.url)) as s:
        model_id = s.scalars(select(MlModel.id).where(MlModel.name == canary.model)).one()
        version = s.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        ).one()
        return str(version.manifest["final"])


def _purges(cluster: Cluster, rid: str) -> dict[str, str]:
    with Session(create_engine(cluster.url)) as s:
        rows = s.scalars(select(HostPurge).order_by(HostPurge.created_at)).all()
        return {r.host_id: r.status.value for r in rows if rid in r.request_ids}


def _live_hosts(cluster: Cluster) -> set[str]:
    engine = create_engine(cluster.url)
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT id FROM hosts")).scalars())


def _final_certificate(cluster: Cluster, rid: str) -> dict[str, Any] | None:
    request = cluster.api("a").get(f"/v1/requests/{rid}", headers=_h(cluster, "dpo")).json()
    [current] = request["certificates"]
    body = current["body"]
    hosts = body.get("hosts") or {}
    settled = body.get("determinism_check") == "bit_exact" and hosts and not hosts["pending"]
    return dict(current) if settled else None


def _report_bytes(cluster: Cluster, rid: str) -> tuple[bytes, str]:
    out, words = b"", ""
    for fmt in ("json", "csv", "pdf"):
        r = cluster.api("a").get(
            f"/v1/requests/{rid}/report", params={"format": fmt}, headers=_h(cluster, "auditor")
        )
        assert r.status_code == 200, r.text
        if fmt == "pdf":
            words = pdf_text(r.content)[0]
        out += words.encode() if fmt == "pdf" else r.content
    return out, words


def test_an_erasure_on_host_a_reaches_host_b_and_leaves_nothing_of_the_canary(
    cluster: Cluster, tiny_lm: Path, retain_file: Path
) -> None:
    canary = Canary()
    _trained(cluster, canary, tiny_lm, retain_file)
    old = _checkpoint(cluster, canary, 1)
    assert [_generate(cluster, h, canary)["model_version"] for h in ("a", "b")] == [1, 1]
    b_copy = cluster.folder("b") / "finetuned" / f"ft-{old}"
    assert b_copy.is_dir()  # B's own merged weights of version 1, in B's own folder
    ids = {h: cluster.host_id(h) for h in HOSTS}
    cluster.wait("three hosts", lambda: _live_hosts(cluster) >= set(ids.values()))

    rid = _erase(cluster, canary)
    blobs, records = _sealed(cluster, rid, canary)
    assert blobs and records and not any(canary.found_in(b) for b in blobs)
    request = _approve(cluster, rid)
    assert request["status"] == "completed", request

    # The worker deleted its copies as it destroyed the checkpoints, A in its periodic loop;
    # B has not served since, and its loop is slow: its copies wait for its next generation.
    def others_confirmed() -> dict[str, str] | None:
        purges = _purges(cluster, rid)
        done = purges.get(ids["a"]) == purges.get(ids["worker"]) == "confirmed"
        return purges if done else None

    purges = cluster.wait(f"A and the worker to confirm ({ids})", others_confirmed, timeout=30)
    assert purges[ids["b"]] == "pending" and b_copy.is_dir()

    answer = _generate(cluster, "b", canary)  # B's next generation: the new version
    assert answer["model_version"] >= 2 and not b_copy.exists()
    assert not list((cluster.folder("b") / "finetuned").glob(f"*{old}*"))
    assert _purges(cluster, rid)[ids["b"]] == "confirmed"

    final = cluster.wait("the final certificate", lambda: _final_certificate(cluster, rid))
    hosts = final["body"]["hosts"]
    assert (hosts["confirmed"], hosts["total"], hosts["absent"]) == (3, 3, 0)
    assert {s["host"]: s["status"] for s in hosts["servers"]} == dict.fromkeys(
        ids.values(), "confirmed"
    )
    [b_entry] = [s for s in hosts["servers"] if s["host"] == ids["b"]]
    assert [d["checkpoint"] for d in b_entry["dropped"]] == [old]
    assert "deleted on 3 of 3 servers that serve this model" in final["plain_words"]
    # The fine-tune's final words name the destroyed record key and when.
    physical = final["body"]["physical_deletion"]
    assert physical["keys_destroyed"] and physical["keys_destroyed_at"]
    assert "key id " in final["plain_words"]

    # The request's keys went as it ended (retention 0): nothing of the canary is left.
    settings = cluster.settings()
    cluster.wait("the request's keys destroyed", lambda: _keys_destroyed(cluster, rid))
    for blob in blobs:
        with pytest.raises(KeyDestroyed):
            open_sealed(settings, blob)
    for payload in records:
        with pytest.raises(KeyDestroyed):
            PayloadReader(settings).open(payload)
    reports, words = _report_bytes(cluster, rid)
    assert "deleted on 3 of 3 servers" in words
    _assert_nothing_left(cluster, canary, reports)


def redis_bytes(broker: str | None) -> bytes:
    """Every value a Redis broker holds (queues, unacknowledged messages, anything else), or
    nothing for the database broker (its tables are in the dump)."""
    if broker is None or not broker.startswith("redis"):
        return b""
    import redis

    client = redis.Redis.from_url(broker)
    held: list[bytes] = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            held.append(client.get(key) or b"")
        elif kind == b"list":
            held += client.lrange(key, 0, -1)
        elif kind == b"hash":
            held += [k + v for k, v in client.hgetall(key).items()]
        elif kind in (b"set", b"zset"):
            held += list(client.smembers(key) if kind == b"set" else client.zrange(key, 0, -1))
    return b"\n".join(held)


def _keys_destroyed(cluster: Cluster, rid: str) -> bool:
    with Session(create_engine(cluster.url)) as s:
        return s.get_one(ErasureRequest, uuid.UUID(rid)).keys_destroyed_at is not None


def _assert_nothing_left(cluster: Cluster, canary: Canary, reports: bytes) -> None:
    dump = pg_dump(cluster.url)
    broker = broker_from_env()
    if broker is None:
        # The broker's tables (with the messages of every task of this erasure) and the task
        # results' table (empty: lethe keeps no task results) are in the dump that is searched.
        for table in ("kombu_message", "celery_taskmeta"):
            assert f"COPY public.{table} ".encode() in dump, table
        with create_engine(cluster.url).connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM kombu_message"))
    places = {"pg_dump": dump, "reports": reports, "broker": redis_bytes(broker)}
    assert [where for where, data in places.items() if canary.found_in(data)] == []
    assert raw_hits(cluster.url, canary) == []
    versions = cluster.bucket.every_version()
    assert versions
    stored = [v for v in versions if "Size" in v]  # delete markers hold no bytes
    assert [v["Key"] for v in stored if canary.found_in(cluster.bucket.read(v))] == []
    # Every host's folder and every process's log.
    assert held_in([cluster.folder(h) for h in HOSTS] + [cluster.root / "logs"], canary) == []


def test_control_with_shredding_off_the_sealed_copies_still_hold_the_canary(
    cluster: Cluster, tiny_lm: Path, retain_file: Path
) -> None:
    cluster.stop("worker")
    cluster.start("worker", LETHE_CRYPTO_SHREDDING="false")
    try:
        canary = Canary()
        _trained(cluster, canary, tiny_lm, retain_file)
        rid = _erase(cluster, canary)
        blobs, _ = _sealed(cluster, rid, canary)
        assert _approve(cluster, rid)["status"] == "completed"
        time.sleep(2)  # a shredding that would happen has happened by now
        assert not _keys_destroyed(cluster, rid)
        opened = b"".join(open_sealed(cluster.settings(), b) for b in blobs)
        assert canary.found_in(opened) and canary.name.encode() in opened
    finally:
        cluster.stop("worker")
        cluster.start("worker")
