"""Scale-out: two real `lethe worker` processes on the ``ml`` queue share the shard retrains
of one batch of erasures (one worker on ``requests`` plans them), and every request completes
exactly once with a verified audit chain.

Broker: the database (embedded default) or LETHE_TEST_BROKER_URL (e.g. Redis).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.core.config import Settings
from service.stack.processes import _celery, worker_command
from tests.integration.worker_env import broker_from_env, worker_env
from tests.support.db import fresh_database
from tests.support.sample_data import MODEL_BODY, synthetic_csv

pytestmark = pytest.mark.integration
NAME = MODEL_BODY["name"]
SUBJECTS = [f"S-{i:04d}" for i in range(8)]  # 8 subjects over 3 shards: at least 2 shards
# Retrains long enough (a few seconds, bit-exact check included) that one worker cannot drain
# the queue between the other's broker polls: an idle machine made the tiny model's 0.1 s
# retrains a race that one worker could win every time.
BODY = {
    **MODEL_BODY,
    "config": {
        **MODEL_BODY["config"],
        "sisa": {**MODEL_BODY["config"]["sisa"], "hidden": [256, 256], "epochs": 12},
    },
}
# A retrain the worker ran: trained and published ('done'), or trained and then found that a
# later request had claimed rows of its shard meanwhile ('requeued'). Which worker runs the
# *last*, publishing retrain of each shard is a race (later approvals requeue earlier
# retrains), so the test asks that both workers trained shards, not that both published.
# 'busy' (the shard was held by the other worker: sent again later) and 'not_claimed' (the job
# was already taken) are not work and do not count.
_RAN = re.compile(
    r"Task lethe\.retrain_shard\[[0-9a-f-]+\] succeeded in [0-9.]+s: '(done|requeued)'"
)


@pytest.fixture(scope="module")
def stack(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("scale")
    broker = broker_from_env()
    with fresh_database(pg_server, prefix="lethe_scale") as url:
        env = worker_env(url, tmp)
        if broker:
            # A shared Redis may hold messages other runs left behind (for other databases):
            # they would count as this test's work.
            subprocess.run(
                [*_celery("purge"), "-f", "-Q", "ml,requests"], env=env, check=True, timeout=60
            )
        procs, logs = [], {}
        for name, queues in (("requests", "requests"), ("ml-a", "ml"), ("ml-b", "ml")):
            logs[name] = tmp / f"{name}.log"
            with open(logs[name], "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*worker_command(queues, 1, None), "-n", f"{name}@%h"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        settings = Settings(
            database_url=url,
            broker_url=broker,
            artifact_url=str(tmp / "artifacts"),
            data_dir=tmp,  # its signing key and checkpoint store: the processes' own
            environment="test",
        )
        try:
            yield {"settings": settings, "url": url, "logs": logs, "procs": procs}
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=60)


def _poll(fetch: Any, done: Any, stack: dict[str, Any], timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        state = fetch()
        if done(state):
            return state
        dead = [p.poll() for p in stack["procs"] if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = {n: p.read_text()[-2000:] for n, p in stack["logs"].items()}
            pytest.fail(f"workers did not finish (exits={dead}): {tails}")
        time.sleep(0.3)


def test_two_ml_workers_share_one_batch_of_shard_retrains(stack: dict[str, Any]) -> None:
    from service.api.tokens import create_token
    from service.app.factory import create_app
    from service.db.session import session_factory, transaction

    with transaction(session_factory(stack["url"])) as s:
        tok = {r: create_token(s, f"scale-{r}", r, actor="test") for r in ("dpo", "ml_engineer")}
    ml = {"authorization": f"Bearer {tok['ml_engineer']}"}
    dpo = {"authorization": f"Bearer {tok['dpo']}"}
    started = time.monotonic()
    with TestClient(create_app(stack["settings"])) as client:
        assert client.post("/v1/models", json=BODY, headers=ml).status_code == 201
        client.post(
            f"/v1/models/{NAME}/records",
            headers=ml,
            files={"file": ("d.csv", synthetic_csv(n_subjects=1500), "text/csv")},
        )
        job = client.post(f"/v1/models/{NAME}/train", headers=ml).json()
        job = _poll(
            lambda: client.get(f"/v1/jobs/{job['id']}", headers=ml).json(),
            lambda j: j["status"] in ("done", "failed"),
            stack,
        )
        assert job["status"] == "done", job
        trained = time.monotonic()
        rids = []
        for subject in SUBJECTS:
            rid = client.post(
                "/v1/requests",
                headers=dpo,
                json={"subject_id": subject, "reason": "art 17", "scope": [NAME]},
            ).json()["id"]
            rids.append(rid)
        for rid in rids:
            r = client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo)
            assert r.status_code == 200
        for rid in rids:
            req = _poll(
                lambda rid=rid: client.get(f"/v1/requests/{rid}", headers=dpo).json(),
                lambda q: q["status"] in ("completed", "failed"),
                stack,
            )
            assert req["status"] == "completed", req
        assert client.get("/v1/audit/verify", headers=dpo).json()["ok"]
    finished = time.monotonic()

    engine = create_engine(stack["url"])
    with engine.connect() as conn:
        shards = conn.execute(
            text("SELECT DISTINCT shard FROM jobs WHERE kind = 'retrain_shard' AND status = 'done'")
        ).scalars()
        shards = sorted(shards)
        # Completed exactly once: one request.completed event and one current certificate each.
        completed = conn.execute(
            text(
                "SELECT request_id::text, count(*) FROM audit_events "
                "WHERE action = 'request.completed' GROUP BY request_id"
            )
        ).all()
        current = conn.execute(
            text("SELECT count(*) FROM certificates WHERE superseded_at IS NULL")
        ).scalar_one()
    engine.dispose()
    assert len(shards) >= 2, shards
    assert sorted(r for r, _ in completed) == sorted(rids) and all(n == 1 for _, n in completed)
    assert current == len(rids)
    # Both ml workers ran shard retrain tasks (their own logs say so).
    ran = {name: _RAN.findall(stack["logs"][name].read_text()) for name in ("ml-a", "ml-b")}
    assert ran["ml-a"] and ran["ml-b"], ran
    done = {name: {o: outcomes.count(o) for o in set(outcomes)} for name, outcomes in ran.items()}
    print(
        {
            "shards_retrained": shards,
            "retrains_by_worker": done,
            "train_s": round(trained - started, 1),
            "erasures_s": round(finished - trained, 1),
        }
    )
