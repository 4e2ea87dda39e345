"""End to end with a real Celery worker process, a real broker and a real PostgreSQL.

Broker: the database itself (kombu's SQLAlchemy transport, the embedded default) or the one in
LETHE_TEST_BROKER_URL (e.g. redis://127.0.0.1:6379/0 — .ci/run runs both).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.stack.processes import worker_command
from tests.integration.worker_env import broker_from_env, worker_env
from tests.support.db import fresh_database
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv

pytestmark = pytest.mark.integration
NAME = MODEL_BODY["name"]


@pytest.fixture(scope="module")
def stack(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("e2e")
    broker = broker_from_env()
    with fresh_database(pg_server, prefix="lethe_e2e") as url:
        env = worker_env(url, tmp)
        log_path = tmp / "worker.log"
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                worker_command("requests,ml", 2, None),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            settings = Settings(
                database_url=url,
                broker_url=broker,
                artifact_url=str(tmp / "artifacts"),
                data_dir=tmp,  # its signing key and checkpoint store: the processes' own
                environment="test",
            )
            try:
                yield {"settings": settings, "url": url, "log": log_path, "worker": worker}
            finally:
                worker.terminate()
                worker.wait(timeout=60)


@pytest.fixture(scope="module")
def client(stack: dict[str, Any]) -> Iterator[TestClient]:
    from service.app.factory import create_app

    with TestClient(create_app(stack["settings"])) as c:
        yield c


@pytest.fixture(scope="module")
def tokens(stack: dict[str, Any]) -> dict[str, str]:
    from service.api.tokens import create_token
    from service.db.session import session_factory, transaction

    with transaction(session_factory(stack["url"])) as s:
        return {
            r: create_token(s, f"e2e-{r}", r, actor="test")
            for r in ("dpo", "ml_engineer", "auditor")
        }


def _h(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _poll(
    fetch: Any, done: Any, worker: subprocess.Popen[bytes], log: Path, timeout: float = 300
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        state = fetch()
        if done(state):
            return state
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"worker did not finish (exit={worker.poll()}):\n" + log.read_text()[-4000:]
            )
        time.sleep(0.3)


def test_file_approve_retrain_complete_export(
    client: TestClient, tokens: dict[str, str], stack: dict[str, Any], tmp_path: Path
) -> None:
    ml, dpo, aud = _h(tokens["ml_engineer"]), _h(tokens["dpo"]), _h(tokens["auditor"])
    worker, log = stack["worker"], stack["log"]
    assert client.post("/v1/models", json=MODEL_BODY, headers=ml).status_code == 201
    r = client.post(
        f"/v1/models/{NAME}/records",
        headers=ml,
        files={"file": ("d.csv", synthetic_csv(), "text/csv")},
    )
    assert r.status_code == 201
    job = client.post(f"/v1/models/{NAME}/train", headers=ml).json()
    job = _poll(
        lambda: client.get(f"/v1/jobs/{job['id']}", headers=ml).json(),
        lambda j: j["status"] in ("done", "failed"),
        worker,
        log,
    )
    assert job["status"] == "done", job

    rids = []
    for subject in (CANARY_SUBJECT, "S-0001", "S-0002"):
        rid = client.post(
            "/v1/requests",
            headers={**dpo, "idempotency-key": f"e2e-{subject}"},
            json={"subject_id": subject, "reason": "art 17"},
        ).json()["id"]
        assert (
            client.post(
                f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo
            ).status_code
            == 200
        )
        rids.append(rid)
    for rid in rids:
        req = _poll(
            lambda rid=rid: client.get(f"/v1/requests/{rid}", headers=dpo).json(),
            lambda q: q["status"] in ("completed", "failed"),
            worker,
            log,
        )
        assert req["status"] == "completed", req
        for cert in req["certificates"]:
            assert cert["kind"] == "exact_retrain"
            assert cert["body"]["determinism_check"] in ("bit_exact", "not_applicable")
        for fmt in ("json", "csv"):
            rep = client.get(f"/v1/requests/{rid}/report", params={"format": fmt}, headers=aud)
            assert rep.status_code == 200 and CANARY_SUBJECT not in rep.text
            (tmp_path / f"{rid}.{fmt}").write_text(rep.text)
    assert client.get("/v1/audit/verify", headers=aud).json()["ok"]
    versions = client.get(f"/v1/models/{NAME}/versions", headers=ml).json()
    assert versions[0]["cause"] == "training"
    # The worker's logs never carry the raw identifier either.
    assert CANARY_SUBJECT not in log.read_text()


def test_generative_request_with_a_real_worker(
    client: TestClient,
    tokens: dict[str, str],
    stack: dict[str, Any],
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    from models.generative.probes import oracle_reveals
    from models.generative.rules import Fact, ForgetSpec
    from tests.support.generative_data import (
        FORGOTTEN,
        RETAINED,
        facts_of,
        forget_body,
        generative_model_body,
    )

    ml, dpo = _h(tokens["ml_engineer"]), _h(tokens["dpo"])
    worker, log = stack["worker"], stack["log"]
    body = generative_model_body("support-bot", tiny_lm, retain_file)
    assert client.post("/v1/models", json=body, headers=ml).status_code == 201
    rid = client.post(
        "/v1/requests",
        headers=dpo,
        json={
            "subject_id": FORGOTTEN,
            "reason": "art 17",
            "scope": ["support-bot"],
            "forget": forget_body(),
        },
    ).json()["id"]
    client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo)
    req = _poll(
        lambda: client.get(f"/v1/requests/{rid}", headers=dpo).json(),
        lambda q: q["status"] in ("completed", "failed"),
        worker,
        log,
    )
    assert req["status"] == "completed", req
    assert req["certificates"][0]["kind"] in ("conformal_risk", "no_guarantee")
    spec = ForgetSpec([FORGOTTEN], facts=[Fact(q, a) for q, a in facts_of(FORGOTTEN)])
    for question, _ in facts_of(FORGOTTEN):
        out = client.post(
            "/v1/models/support-bot/generate", json={"prompt": question}, headers=ml
        ).json()
        assert out["rule_set_version"] == 1 and not oracle_reveals(out["text"], spec)
    question, answer = facts_of(RETAINED[0])[0]
    out = client.post(
        "/v1/models/support-bot/generate", json={"prompt": question}, headers=ml
    ).json()
    assert answer in out["text"]
    # The budget is calibrated by the worker after activation.
    _poll(
        lambda: client.get("/v1/models/support-bot/rule-sets", headers=ml).json(),
        lambda v: v[0]["calibration"]["budget"]["status"] == "calibrated",
        worker,
        log,
    )
    assert FORGOTTEN not in log.read_text()


def test_worker_registers_every_task_the_service_sends(settings: Settings) -> None:
    from service.queue.names import TASK_QUEUES
    from workers.celery_app import celery_app

    assert set(TASK_QUEUES) <= set(celery_app.tasks)
