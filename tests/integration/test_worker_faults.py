"""Kill -9 of a real Celery worker (its pool child, or its main process) at the moments that
matter: idle, mid-retrain, mid-activation of verifier rules. Every request still completes
exactly once, with no duplicated audit events and a chain that verifies, with no manual step:
the worker's own pool, a restarted worker (as `lethe serve`'s supervisor would start one) and
its reaper recover it.

Broker: the database (kombu's SQLAlchemy transport, the embedded default) or the one in
LETHE_TEST_BROKER_URL.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import psycopg
import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.queue.presence import libpq_dsn
from service.stack.processes import worker_command
from tests.integration.worker_env import broker_from_env, worker_env
from tests.support.db import fresh_database
from tests.support.sample_data import MODEL_BODY, synthetic_csv

pytestmark = pytest.mark.integration

# Enough epochs that a shard retrain lasts a few seconds: long enough to be killed mid-way.
SLOW_BODY = copy.deepcopy(MODEL_BODY)
SLOW_BODY["name"] = "slow-credit"
SLOW_BODY["config"]["sisa"]["epochs"] = 60  # type: ignore[index]
DONE = ("completed", "failed")


class Worker:
    """One `celery worker --concurrency 1` (the configuration that used to wedge)."""

    def __init__(self, env: dict[str, str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            worker_command("requests,ml", 1, None), env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def children(self) -> list[int]:
        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.Error:
            return []

    def kill_child(self) -> None:
        kids = self.children()
        assert kids, "the worker has no pool child"
        for pid in kids:
            os.kill(pid, signal.SIGKILL)

    def kill_main(self) -> None:
        # As kill -9 of the main process alone: its pool child is orphaned, not killed, and may
        # finish what it started; the job's lease keeps the two from both publishing.
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in kids:
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def env_and_settings(
    pg_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], Settings, Path]]:
    tmp = tmp_path_factory.mktemp("faults")
    broker = broker_from_env()
    with fresh_database(pg_server, prefix="lethe_faults") as url:
        env = worker_env(
            url,
            tmp,
            HF_HUB_OFFLINE="1",
            # The tests read the log while the worker runs: no block-buffered lines.
            PYTHONUNBUFFERED="1",
        )
        settings = Settings(
            database_url=url,
            broker_url=broker,
            artifact_url=str(tmp / "artifacts"),
            data_dir=tmp,  # its signing key and checkpoint store: the processes' own
            environment="test",
        )
        yield env, settings, tmp


@pytest.fixture()
def worker(env_and_settings: tuple[dict[str, str], Settings, Path]) -> Iterator[dict[str, Any]]:
    """A fresh worker per test; ``restart`` starts another as a supervisor would."""
    env, _, tmp = env_and_settings
    log_path = tmp / f"worker-{uuid.uuid4().hex[:6]}.log"
    with open(log_path, "ab") as log:
        box: dict[str, Any] = {"w": Worker(env, log), "log": log_path}

        def restart() -> None:
            box["w"].stop()
            box["w"] = Worker(env, log)

        box["restart"] = restart
        try:
            yield box
        finally:
            box["w"].stop()


@pytest.fixture(scope="module")
def api(env_and_settings: tuple[dict[str, str], Settings, Path]) -> Iterator[dict[str, Any]]:
    from service.api.tokens import create_token
    from service.app.factory import create_app
    from service.db.session import session_factory, transaction

    _, settings, _ = env_and_settings
    assert settings.database_url
    with transaction(session_factory(settings.database_url)) as s:
        tok = {
            r: {"authorization": f"Bearer {create_token(s, f'f-{r}', r, actor='test')}"}
            for r in ("dpo", "ml_engineer", "auditor")
        }
    with TestClient(create_app(settings)) as client:
        yield {"client": client, **tok, "url": settings.database_url}


def _log(worker: dict[str, Any]) -> str:
    return Path(worker["log"]).read_text(errors="replace")


def _wait(predicate: Callable[[], Any], worker: dict[str, Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout}s; worker log:\n{_log(worker)[-4000:]}")


def _rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return conn.execute(sql, params).fetchall()


def _status(api: dict[str, Any], rid: str) -> str:
    return str(api["client"].get(f"/v1/requests/{rid}", headers=api["dpo"]).json()["status"])


def _file(api: dict[str, Any], subject: str, **extra: Any) -> str:
    c = api["client"]
    rid: str = c.post(
        "/v1/requests",
        headers={**api["dpo"], "idempotency-key": f"faults-{uuid.uuid4().hex}"},
        json={"subject_id": subject, "reason": "art 17", **extra},
    ).json()["id"]
    assert c.post(
        f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=api["dpo"]
    ).is_success
    return rid


def _assert_exactly_once(api: dict[str, Any], rid: str, models: int = 1) -> None:
    """Completed once, one certificate per model, no audit event twice, a verifying chain."""
    rows = _rows(
        api["url"],
        "SELECT action, target_type, target_id, details::text FROM audit_events"
        " WHERE request_id = %s",
        (uuid.UUID(rid),),
    )
    # A reaped or failed job attempt is recorded once per attempt, by design.
    counts = Counter(r for r in rows if r[0] not in ("job.reaped", "job.failed"))
    assert [r for r, n in counts.items() if n > 1] == []
    actions = Counter(r[0] for r in rows)
    assert actions["request.completed"] == 1 and actions["certificate.issued"] == models, actions
    verify = api["client"].get("/v1/audit/verify", headers=api["auditor"]).json()
    assert verify["ok"], verify


def test_killing_an_idle_pool_child_leaves_the_worker_working(
    worker: dict[str, Any], env_and_settings: tuple[dict[str, str], Settings, Path]
) -> None:
    """Before workers.pool, on the database broker: the replacement child blocked for ever on
    the task pipe's lock the killed child held, and the next task never ran."""
    from celery import Celery

    from service.queue.client import broker_url
    from service.queue.names import QUEUE_REQUESTS, TASK_REAP_STUCK_JOBS

    _, settings, _ = env_and_settings
    # The worker reaps once when it is ready: after that its one child is idle.
    _wait(lambda: "succeeded" in _log(worker), worker, "the start-up reap did not run", 240)
    time.sleep(1.0)
    worker["w"].kill_child()
    _wait(lambda: "exited with 'signal 9" in _log(worker), worker, "no child death seen", 30)
    client = Celery("faults-test", broker=broker_url(settings))
    task_id = client.send_task(TASK_REAP_STUCK_JOBS, queue=QUEUE_REQUESTS).id
    _wait(
        lambda: f"[{task_id}] succeeded" in _log(worker),
        worker,
        "the worker ran nothing after its idle child was killed",
        60,
    )


@pytest.fixture(scope="module")
def trained(api: dict[str, Any], env_and_settings: Any) -> str:
    """A SISA model trained by a worker of its own (stopped before the fault tests start)."""
    env, _, tmp = env_and_settings
    c, ml = api["client"], api["ml_engineer"]
    assert c.post("/v1/models", json=SLOW_BODY, headers=ml).status_code == 201
    name = str(SLOW_BODY["name"])
    up = c.post(
        f"/v1/models/{name}/records",
        headers=ml,
        files={"file": ("d.csv", synthetic_csv(), "text/csv")},
    )
    assert up.status_code == 201
    job = c.post(f"/v1/models/{name}/train", headers=ml).json()
    with open(tmp / "train.log", "ab") as log:
        w = Worker(env, log)
        box = {"log": tmp / "train.log"}
        try:
            _wait(
                lambda: c.get(f"/v1/jobs/{job['id']}", headers=ml).json()["status"] == "done",
                box,
                "training did not finish",
                300,
            )
        finally:
            w.stop()
    return name


def _train_subject(api: dict[str, Any], start: int) -> str:
    """A subject with training rows (a holdout-only subject needs no retrain)."""
    from service.core.security import subject_ref

    settings = Settings(database_url=api["url"], environment="test")
    for i in range(start, 80):
        subject = f"S-{i:04d}"
        if _rows(
            api["url"],
            "SELECT 1 FROM training_records WHERE subject_ref = %s AND split = 'train'",
            (subject_ref(settings, subject),),
        ):
            return subject
    raise AssertionError("no subject with training rows")


def _retrain_running(url: str, rid: str) -> bool:
    return bool(
        _rows(
            url,
            "SELECT 1 FROM jobs j JOIN action_jobs aj ON aj.job_id = j.id"
            " JOIN request_actions a ON a.id = aj.action_id"
            " WHERE a.request_id = %s AND j.kind = 'retrain_shard' AND j.status = 'running'",
            (uuid.UUID(rid),),
        )
    )


@pytest.mark.parametrize("target", ["child", "main"])
def test_kill_mid_retrain_completes_exactly_once(
    target: str, api: dict[str, Any], trained: str, worker: dict[str, Any]
) -> None:
    rid = _file(api, _train_subject(api, {"child": 3, "main": 40}[target]), scope=[trained])
    _wait(lambda: _retrain_running(api["url"], rid), worker, "the retrain did not start", 120)
    if target == "child":
        worker["w"].kill_child()
    else:
        worker["w"].kill_main()
    assert _status(api, rid) not in DONE, "the kill came too late to test anything"
    if target == "main":
        worker["restart"]()
    status = _wait(
        lambda: (s := _status(api, rid)) in DONE and s, worker, "the request did not finish", 180
    )
    assert status == "completed", _log(worker)[-3000:]
    _assert_exactly_once(api, rid)


def _activation_running(url: str, rid: str) -> bool:
    return bool(
        _rows(
            url,
            "SELECT 1 FROM request_actions WHERE request_id = %s AND status = 'running'",
            (uuid.UUID(rid),),
        )
    )


@pytest.fixture(scope="module")
def generative(api: dict[str, Any], tiny_lm: Path, retain_file: Path) -> str:
    from tests.support.generative_data import generative_model_body

    body = generative_model_body("faults-bot", tiny_lm, retain_file)
    assert api["client"].post("/v1/models", json=body, headers=api["ml_engineer"]).is_success
    return "faults-bot"


@pytest.mark.parametrize("target", ["child", "main"])
def test_kill_mid_rules_activation_completes_exactly_once(
    target: str, api: dict[str, Any], generative: str, worker: dict[str, Any]
) -> None:
    from tests.support.generative_data import FORGOTTEN, RETAINED, forget_body

    subject = FORGOTTEN if target == "child" else RETAINED[1]
    rid = _file(api, subject, scope=[generative], forget=forget_body(subject))
    _wait(lambda: _activation_running(api["url"], rid), worker, "activation did not start", 120)
    if target == "child":
        worker["w"].kill_child()
    else:
        worker["w"].kill_main()
    assert _status(api, rid) not in DONE, "the kill came too late to test anything"
    if target == "main":
        worker["restart"]()
    status = _wait(
        lambda: (s := _status(api, rid)) in DONE and s, worker, "the request did not finish", 180
    )
    assert status == "completed", _log(worker)[-3000:]
    _assert_exactly_once(api, rid)
    # One activation: the request's rules went into force once.
    activated = _rows(
        api["url"],
        "SELECT count(*) FROM audit_events WHERE request_id = %s AND action = 'rules.activated'",
        (uuid.UUID(rid),),
    )
    assert activated[0][0] == 1
