"""/metrics: scraped while a request goes through its life; values move as they should."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from service.db.base import utcnow
from service.db.tables import ErasureRequest
from tests.support.api import SentTasks, auth
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv
from tests.support.tasks import drain

TOKEN = "scrape-secret-for-tests"


@pytest.fixture
def client(
    settings: Settings, factory: sessionmaker[Session], sent_tasks: SentTasks
) -> Iterator[TestClient]:
    from service.app.factory import create_app
    from workers.base import DbTask

    app = create_app(settings.model_copy(update={"metrics_token": TOKEN}))
    app.state.session_factory = factory
    DbTask.factory_override = factory
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    DbTask.factory_override = None


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert CANARY_SUBJECT not in r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_scraper_token_or_a_setting(
    client: TestClient, settings: Settings, factory: sessionmaker[Session]
) -> None:
    from service.app.factory import create_app

    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthenticated"
    for update_, status in (({}, 404), ({"metrics_public": True}, 200)):
        app = create_app(settings.model_copy(update=update_))
        app.state.session_factory = factory
        with TestClient(app) as c:
            r = c.get("/metrics")
            assert r.status_code == status
            if status == 404:
                assert r.json()["error"]["code"] == "metrics_disabled"


def test_scrapes_follow_a_request_through_its_life(
    client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks, session: Session
) -> None:
    ml, dpo = auth(tokens["ml_engineer"]), auth(tokens["dpo"])
    first = scrape(client)
    assert value(first, "lethe_requests_overdue") == 0
    assert value(first, "lethe_oldest_open_request_age_seconds") == 0
    assert value(first, "lethe_job_duration_seconds_count", kind="train") == 0

    assert client.post("/v1/models", json=MODEL_BODY, headers=ml).status_code == 201
    client.post(
        f"/v1/models/{MODEL_BODY['name']}/records",
        files={"file": ("d.csv", synthetic_csv(), "text/csv")},
        headers=ml,
    )
    client.post(f"/v1/models/{MODEL_BODY['name']}/train", headers=ml)
    assert value(scrape(client), "lethe_queue_depth", queue="ml_jobs") == 1
    drain(sent_tasks)
    trained = scrape(client)
    assert value(trained, "lethe_queue_depth", queue="ml_jobs") == 0
    assert value(trained, "lethe_job_duration_seconds_count", kind="train") == 1
    assert value(trained, "lethe_job_duration_seconds_bucket", kind="train", le="+Inf") == 1
    assert value(trained, "lethe_job_duration_seconds_sum", kind="train") > 0

    rid = client.post(
        "/v1/requests",
        # Scoped: models other tests committed to this database are not this request's.
        json={"subject_id": CANARY_SUBJECT, "reason": "art 17", "scope": [MODEL_BODY["name"]]},
        headers=dpo,
    ).json()["id"]
    filed = scrape(client)
    assert value(filed, "lethe_requests", status="received") == 1
    assert value(filed, "lethe_oldest_open_request_age_seconds") > 0
    # Past its due date while still open: overdue.
    session.execute(
        update(ErasureRequest)
        .where(ErasureRequest.id == rid)
        .values(due_at=utcnow() - timedelta(days=1))
    )
    session.commit()
    assert value(scrape(client), "lethe_requests_overdue") == 1

    client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo)
    assert value(scrape(client), "lethe_queue_depth", queue="requests") == 1
    drain(sent_tasks)
    done = scrape(client)
    assert value(done, "lethe_requests", status="completed") == 1
    assert value(done, "lethe_requests_overdue") == 0  # closed: no longer open and overdue
    assert value(done, "lethe_oldest_open_request_age_seconds") == 0
    assert value(done, "lethe_queue_depth", queue="requests") == 0
    [cert] = client.get(f"/v1/requests/{rid}", headers=dpo).json()["certificates"]
    shards = len(cert["body"]["shards_retrained"])
    assert value(done, "lethe_job_duration_seconds_count", kind="retrain_shard") == shards
    assert value(done, "lethe_reaper_actions_total", action="job.reaped") == 0
    assert value(done, "lethe_rules_activation_seconds_count") == 0
    # HTTP responses by route template and status: the path's id never becomes a label.
    approve = value(
        done,
        "lethe_http_responses_total",
        method="POST",
        route="/v1/requests/{request_id}/approve",
        status="200",
    )
    assert approve == 1
    assert not any(rid in str(labels) for _, labels in done)
    assert (
        value(done, "lethe_http_responses_total", method="GET", route="/metrics", status="401") == 0
    )


def test_rules_activation_latency_is_scraped(
    client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    from tests.support.generative_data import FORGOTTEN, forget_body, generative_model_body

    ml, dpo = auth(tokens["ml_engineer"]), auth(tokens["dpo"])
    body = generative_model_body("support-bot", tiny_lm, retain_file)
    assert client.post("/v1/models", json=body, headers=ml).status_code == 201
    rid = client.post(
        "/v1/requests",
        headers=dpo,
        json={"subject_id": FORGOTTEN, "reason": "art 17", "forget": forget_body()},
    ).json()["id"]
    client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo)
    assert value(scrape(client), "lethe_rules_activation_seconds_count") == 0
    drain(sent_tasks)
    after = scrape(client)
    assert value(after, "lethe_rules_activation_seconds_count") == 1
    assert value(after, "lethe_rules_activation_seconds_bucket", le="+Inf") == 1
    assert value(after, "lethe_rules_activation_seconds_sum") > 0


def test_reaper_actions_are_counted_from_the_audit_log(
    client: TestClient, settings: Settings, factory: sessionmaker[Session], session: Session
) -> None:
    from service.audit import lock_audit_chain
    from service.db.enums import JobKind, JobStatus, ModelKind
    from service.db.tables import Job, MlModel
    from service.jobs.reaper import reap

    model = MlModel(
        id=uuid.uuid4(),
        name="reaped",
        kind=ModelKind.sharded_classifier,
        config={},
        policy={},
        created_by="test",
    )
    session.add(model)
    session.flush()
    # A running job whose worker went silent an hour ago (no lease held): the reaper requeues it.
    stale = utcnow() - timedelta(hours=1)
    session.add(
        Job(
            id=uuid.uuid4(),
            kind=JobKind.retrain_shard,
            model_id=model.id,
            shard=0,
            status=JobStatus.running,
            attempts=1,
            started_at=stale,
            heartbeat_at=stale,
        )
    )
    session.commit()
    assert value(scrape(client), "lethe_reaper_actions_total", action="job.reaped") == 0
    assert value(scrape(client), "lethe_jobs_running") == 1
    with factory() as s, s.begin():
        lock_audit_chain(s)
        reap(s, settings, "reaper")
    after = scrape(client)
    assert value(after, "lethe_reaper_actions_total", action="job.reaped") == 1
    assert value(after, "lethe_jobs_running") == 0
    assert value(after, "lethe_queue_depth", queue="ml_jobs") == 1
