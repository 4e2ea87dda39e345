"""From approval to certificate, running the worker tasks directly on the test database: one
shard retrained bit for bit, retrains coalesced or interleaved, redeliveries and dead workers,
shards too small to learn reported, and the raw identifier stored nowhere."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from models.sisa import (
    checkpoint_key,
)
from service.audit import verify_chain
from service.core.config import get_settings
from service.core.storage import artifact_store
from service.db.tables import Job, ModelVersion
from service.queue.names import (
    TASK_PROCESS_REQUEST,
    TASK_RETRAIN_SHARD,
    TASK_TRAIN_MODEL,
)
from service.reports.plain import event_words
from service.reports.words import describe_event
from tests.support.api import SentTasks, auth
from tests.support.exact import (
    a_trained_subject,
    approve,
    file_and_approve,
    model_body,
    register_and_ingest,
    train_subject,
    trained_subject_of,
)
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv
from tests.support.tasks import drain

NAME = MODEL_BODY["name"]
# Content-addressed checkpoints left by another test's retrain of the same subject would be
# found instead of trained, and the slice counts below would read 0.
pytestmark = pytest.mark.usefixtures("own_artifacts")


def test_exact_erasure_end_to_end(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    subject = a_trained_subject(session)
    rows = train_subject(session, subject)
    shard = rows[0].shard
    assert {r.shard for r in rows} == {shard}  # all of a subject's records in one shard
    rid = file_and_approve(app_client, tokens, subject)
    ran = drain(sent_tasks)
    assert ran[0] == (TASK_PROCESS_REQUEST, "planned")
    assert [r for r in ran if r[0] == TASK_RETRAIN_SHARD] == [(TASK_RETRAIN_SHARD, "done")]

    request = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert request["status"] == "completed"
    assert [a["deletion_failures"] for a in request["actions"]] == [0]
    [cert] = request["certificates"]
    body = cert["body"]
    assert cert["kind"] == "exact_retrain" and body["determinism_check"] == "bit_exact"
    [info] = body["shards_retrained"]
    assert info["shard"] == shard
    assert info["first_affected_slice"] == min(r.slice for r in rows)
    assert info["slices_retrained"] == MODEL_BODY["config"]["sisa"]["slices"] - min(
        r.slice for r in rows
    )
    assert info["exactness"]["tensors_compared"] > 0
    assert body["version_before"] == 1 and body["version_after"] == 2
    assert body["records_erased"]["train"] == len(rows)

    # The rows' content is gone; the index rows remain as tombstones.
    session.expire_all()
    for row in train_subject(session, subject):
        assert row.payload is None and row.label is None and row.erased_at is not None
    # The old checkpoints that saw the subject are deleted, and version 1 is marked purged.
    store = artifact_store(get_settings())
    v1 = session.scalar(
        select(ModelVersion).where(
            ModelVersion.number == 1, ModelVersion.model_id == rows[0].model_id
        )
    )
    assert v1 is not None and v1.purged_at is not None
    old = v1.manifest["slices"][str(shard)][info["first_affected_slice"] :]
    assert old and not any(store.exists(checkpoint_key(c)) for c in old)
    kept = v1.manifest["slices"][str(shard)][: info["first_affected_slice"]]
    assert all(store.exists(checkpoint_key(c)) for c in kept)
    assert verify_chain(session).ok

    timeline = [
        e["action"]
        for e in app_client.get(f"/v1/requests/{rid}/timeline", headers=auth(tokens["dpo"])).json()
    ]
    for action in (
        "request.received",
        "request.approved",
        "request.started",
        "action.planned",
        "certificate.issued",
        "records.erased",
        "request.completed",
    ):
        assert action in timeline


def test_published_model_serves_the_new_version(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    h = auth(tokens["ml_engineer"])
    row = {"age": 40, "income": 3000.0, "region": "north"}
    before = app_client.post(f"/v1/models/{NAME}/predict", json={"rows": [row]}, headers=h)
    assert before.status_code == 200 and before.json()["version"] == 1
    file_and_approve(app_client, tokens, a_trained_subject(session))
    drain(sent_tasks)
    after = app_client.post(f"/v1/models/{NAME}/predict", json={"rows": [row]}, headers=h)
    assert after.json()["version"] == 2
    assert np.isclose(sum(after.json()["probabilities"][0]), 1.0)


def test_coalesced_requests_share_one_retrain(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    # Two subjects in the same shard, filed before any retrain ran: one job serves both.
    by_shard: dict[int, list[str]] = {}
    for i in range(80):
        rows = train_subject(session, f"S-{i:04d}")
        if rows:
            by_shard.setdefault(rows[0].shard, []).append(f"S-{i:04d}")
    shard, subjects = next((s, v) for s, v in by_shard.items() if len(v) >= 2)
    r1 = file_and_approve(app_client, tokens, subjects[0])
    r2 = file_and_approve(app_client, tokens, subjects[1])
    ran = drain(sent_tasks)
    assert [r for r in ran if r[0] == TASK_RETRAIN_SHARD and r[1] == "done"] == [
        (TASK_RETRAIN_SHARD, "done")
    ]
    jobs = session.scalars(select(Job).where(Job.kind == "retrain_shard")).all()
    assert len(jobs) == 1 and jobs[0].shard == shard
    for rid in (r1, r2):
        req = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
        assert req["status"] == "completed"
        assert req["certificates"][0]["body"]["determinism_check"] == "bit_exact"


def test_interleaved_retrains_of_two_shards_evaluate_on_the_served_version(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two ML workers: shard b's retrain publishes, destroying the checkpoints it replaced,
    # while shard a's retrain is still training from the version both started on.
    import service.exact.retrain as retrain_module
    from workers.tasks.exact import retrain_shard
    from workers.tasks.requests import process_request

    first: dict[int, str] = {}
    for i in range(80):
        rows = train_subject(session, f"S-{i:04d}")
        if rows:
            first.setdefault(rows[0].shard, f"S-{i:04d}")
    (shard_a, subject_a), (shard_b, subject_b) = sorted(first.items())[:2]
    rids = [file_and_approve(app_client, tokens, s) for s in (subject_a, subject_b)]
    for args in sent_tasks.pop(TASK_PROCESS_REQUEST):
        assert process_request(*args) == "planned"
    sent = {str(args[0]) for args in sent_tasks.pop(TASK_RETRAIN_SHARD)}
    job_of = {
        j.shard: str(j.id) for j in session.scalars(select(Job).where(Job.kind == "retrain_shard"))
    }
    assert set(job_of.values()) == sent
    real, other = retrain_module.unlearn_shard, []

    def b_publishes_meanwhile(config: Any, shard: int, *args: Any, **kwargs: Any) -> Any:
        out = real(config, shard, *args, **kwargs)
        if shard == shard_a and not other:
            other.append(retrain_shard(job_of[shard_b]))
        return out

    monkeypatch.setattr(retrain_module, "unlearn_shard", b_publishes_meanwhile)
    assert retrain_shard(job_of[shard_a]) == "done"
    assert other == ["done"]
    assert drain(sent_tasks) == []  # nothing left over, nothing to run again

    session.expire_all()
    versions = {
        v.number: v for v in session.scalars(select(ModelVersion).order_by(ModelVersion.number))
    }
    assert sorted(versions) == [1, 2, 3]  # b's version, then a's on top of it
    job_a = session.get_one(Job, uuid.UUID(job_of[shard_a]))
    # a's "before" figure is the version it was published onto (b's), not the stale one.
    assert job_a.result["accuracy_before"] == versions[2].metrics["holdout_accuracy"]
    v1, v3 = versions[1].manifest["slices"], versions[3].manifest["slices"]
    assert v3[str(shard_a)] != v1[str(shard_a)] and v3[str(shard_b)] != v1[str(shard_b)]
    for rid in rids:
        req = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
        assert req["status"] == "completed"
    assert verify_chain(session).ok


def test_redelivered_task_does_not_retrain_twice(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    from workers.tasks.exact import retrain_shard
    from workers.tasks.requests import process_request

    rid = file_and_approve(app_client, tokens, a_trained_subject(session))
    drain(sent_tasks)
    versions = session.scalar(select(func.count()).select_from(ModelVersion))
    job = session.scalars(select(Job).where(Job.kind == "retrain_shard")).one()
    # The broker delivers both messages again (acks_late after a lost ack).
    assert retrain_shard(str(job.id)) == "not_claimed"
    assert process_request(rid) == "terminal"
    assert sent_tasks.sent == []
    assert session.scalar(select(func.count()).select_from(ModelVersion)) == versions


def test_certificate_follows_the_destruction_and_a_failed_one_runs_again(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workers.tasks.exact as training
    from workers.tasks.requests import process_request

    rid = file_and_approve(app_client, tokens, a_trained_subject(session))
    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    process_request(*args)
    [job_args] = sent_tasks.pop(TASK_RETRAIN_SHARD)
    real, calls = training.destroy_checkpoints, []

    def fails_twice(*a: Any) -> Any:
        calls.append(a)
        if len(calls) <= 2:
            raise OSError("store unreachable at /secret/path")
        return real(*a)

    monkeypatch.setattr(training, "destroy_checkpoints", fails_twice)
    assert training.retrain_shard(*job_args) == "requeued"
    # Published (version 2 serves) but nothing certified while the old checkpoints exist.
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert request["status"] == "in_progress" and request["certificates"] == []
    session.expire_all()
    job = session.get_one(Job, uuid.UUID(job_args[0]))
    assert job.status == "done" and "closed" not in job.result
    store = artifact_store(get_settings())
    superseded = job.result["superseded_checkpoints"]
    assert superseded and all(store.exists(checkpoint_key(c)) for c in superseded)

    # Sent again after a delay that doubles per failure, each failure in the request's trail
    # (in plain words on the timeline; the exception's class, never its message).
    [(name, args, first_delay)] = sent_tasks.sent
    assert (name, args, first_delay) == (TASK_RETRAIN_SHARD, job_args, 5)
    sent_tasks.sent.clear()
    assert training.retrain_shard(*job_args) == "requeued"
    [(_, _, second_delay)] = sent_tasks.sent
    assert second_delay == 10
    assert sent_tasks.pop(TASK_RETRAIN_SHARD) == [job_args]
    timeline = app_client.get(f"/v1/requests/{rid}/timeline", headers=auth(tokens["dpo"]))
    failed = [e for e in timeline.json() if e["action"] == "artifacts.deletion_failed"]
    assert [e["details"]["attempt"] for e in failed] == [1, 2]
    assert {e["details"]["error"] for e in failed} == {"OSError"}
    assert "secret" not in timeline.text
    assert "did not work this time (try 2); lethe keeps trying" in event_words(failed[1])
    assert "failed (OSError), attempt 2; retried in 10.0 s" in describe_event(failed[1])
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert [a["deletion_failures"] for a in request["actions"]] == [2]

    assert training.retrain_shard(*job_args) == "finished"
    assert training.retrain_shard(*job_args) == "not_claimed"  # closed: nothing left
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert request["status"] == "completed"
    assert [a["deletion_failures"] for a in request["actions"]] == [0]
    # The count is of tries at a deletion still to do: it ends when the deletion works (an
    # action a later step reopens must not say this one has not worked); the trail keeps both.
    session.refresh(job)
    assert job.result["destroy_failures"] == 0
    [cert] = request["certificates"]
    assert cert["body"]["determinism_check"] == "bit_exact"
    assert not any(store.exists(checkpoint_key(c)) for c in superseded)
    versions = session.scalar(select(func.count()).select_from(ModelVersion))
    assert versions == 2  # published once
    timeline = [
        e["action"]
        for e in app_client.get(f"/v1/requests/{rid}/timeline", headers=auth(tokens["dpo"])).json()
    ]
    assert "certificate.issued" in timeline and "request.completed" in timeline
    assert verify_chain(session).ok


def test_worker_death_before_publish_is_reaped_and_resumes_from_checkpoints(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
    monkeypatch: Any,
) -> None:
    import pytest

    import workers.tasks.exact as training
    from workers.tasks.reaper import reap_stuck_jobs
    from workers.tasks.requests import process_request

    rid = file_and_approve(app_client, tokens, a_trained_subject(session))
    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    process_request(*args)
    [job_args] = sent_tasks.pop(TASK_RETRAIN_SHARD)

    def die(*_: Any, **__: Any) -> str:
        raise SystemExit("worker process killed before publishing")

    with monkeypatch.context() as m:
        m.setattr(training, "publish_retrain", die)
        with pytest.raises(SystemExit):
            training.retrain_shard(*job_args)
    # The broker redelivers (acks_late), but the job still looks taken: nothing runs twice.
    assert training.retrain_shard(*job_args) == "not_claimed"
    job = session.get_one(Job, __import__("uuid").UUID(job_args[0]))
    assert job.status == "running"
    # The reaper finds the silent job once its heartbeat is stale, and requeues it.
    session.execute(text("UPDATE jobs SET heartbeat_at = now() - interval '1 day'"))
    session.commit()
    assert reap_stuck_jobs() == {"requeued": 1, "failed": 0, "resent": 0, "exact_overdue": 0}
    drain(sent_tasks)
    req = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert req["status"] == "completed"
    [info] = req["certificates"][0]["body"]["shards_retrained"]
    # Every slice was checkpointed by the first attempt: nothing is trained twice.
    assert info["slices_retrained"] == 0
    assert info["exactness"]["status"] == "bit_exact"
    actions = [
        e["action"]
        for e in app_client.get(f"/v1/requests/{rid}/timeline", headers=auth(tokens["dpo"])).json()
    ]
    assert "request.completed" in actions


def test_job_out_of_attempts_fails_the_request(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    from workers.tasks.reaper import reap_stuck_jobs
    from workers.tasks.requests import process_request

    rid = file_and_approve(app_client, tokens, a_trained_subject(session))
    [args] = sent_tasks.pop(TASK_PROCESS_REQUEST)
    process_request(*args)
    sent_tasks.sent.clear()
    session.execute(
        text(
            "UPDATE jobs SET status = 'running', attempts = 99, "
            "heartbeat_at = now() - interval '1 day' WHERE kind = 'retrain_shard'"
        )
    )
    session.commit()
    assert reap_stuck_jobs()["failed"] == 1
    req = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert req["status"] == "failed" and req["failure_code"] == "worker_lost"
    assert verify_chain(session).ok


def test_subject_without_records_is_skipped(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
) -> None:
    rid = file_and_approve(app_client, tokens, "nobody-we-know")
    drain(sent_tasks)
    req = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    assert req["status"] == "completed" and req["actions"][0]["status"] == "skipped"
    # Held nowhere: its own certificate of where lethe looked, not an erasure's.
    [cert] = req["certificates"]
    assert cert["kind"] == "no_data_held" and cert["body"]["records_found"] == 0


def test_canary_never_stored_or_exported(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> None:
    rid = file_and_approve(app_client, tokens, CANARY_SUBJECT)
    drain(sent_tasks)
    dump = session.execute(
        text("SELECT string_agg(t::text, ' ') FROM (SELECT * FROM audit_events) t")
    ).scalar()
    assert dump and CANARY_SUBJECT not in dump and CANARY_SUBJECT.split("@")[0] not in dump
    for table in ("erasure_requests", "training_records", "data_subjects", "certificates"):
        content = session.execute(
            text(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t")
        ).scalar()
        assert CANARY_SUBJECT not in (content or "")
    for fmt in ("json", "csv"):
        r = app_client.get(
            f"/v1/requests/{rid}/report", params={"format": fmt}, headers=auth(tokens["auditor"])
        )
        assert CANARY_SUBJECT not in r.text


def test_shards_too_small_are_reported_not_published_silently(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks, session: Session
) -> None:
    h = auth(tokens["ml_engineer"])
    name = "too-many-shards"
    register_and_ingest(app_client, h, model_body(name, shards=12, slices=2), synthetic_csv())
    job = app_client.post(f"/v1/models/{name}/train", headers=h).json()
    assert drain(sent_tasks) == [(TASK_TRAIN_MODEL, "done")]
    result = app_client.get(f"/v1/jobs/{job['id']}", headers=h).json()["result"]
    assert result["schedule"] == "early_stopping"
    assert result["shards_too_small"] and result["warnings"]
    [version] = app_client.get(f"/v1/models/{name}/versions", headers=h).json()
    assert version["metrics"]["shards_too_small"] == result["shards_too_small"]

    subject = trained_subject_of(session, name)
    rid = approve(app_client, tokens, subject, name)
    drain(sent_tasks)
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(tokens["dpo"])).json()
    [cert] = request["certificates"]
    [shard] = cert["body"]["shards_retrained"]
    assert shard["too_small"]
    assert cert["body"]["warnings"] and "WARNING" in cert["body"]["plain_words"]
    versions = app_client.get(f"/v1/models/{name}/versions", headers=h).json()
    assert str(shard["shard"]) in versions[-1]["metrics"]["shards_too_small"]
