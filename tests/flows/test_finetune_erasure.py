"""Policy "both" on a model lethe fine-tunes: rules at once (interim certificate), then exact
removal from the fine-tune, the rules retired and a final certificate; tasks run directly."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.artifacts import open_store
from models.finetune import checkpoint_key, merged_dir
from service.audit import verify_chain
from service.core.config import Settings
from service.core.storage import merged_root
from service.db.enums import RuleSetStatus
from service.db.tables import Job, MlModel, ModelVersion, RuleSetVersion
from service.queue.names import (
    TASK_CALIBRATE_BUDGET,
    TASK_FINETUNE_MODEL,
    TASK_FINETUNE_RETRAIN,
    TASK_FINETUNE_VERIFY,
    TASK_PROCESS_REQUEST,
    TASK_UPDATE_VERIFIER_RULES,
)
from tests.support.api import SentTasks, auth
from tests.support.generative_data import (
    FORGOTTEN,
    PEOPLE,
    RETAINED,
    facts_of,
    forget_body,
    generative_model_body,
)
from tests.support.generative_data import (
    TINY_FINETUNE as FINETUNE,
)
from tests.support.tasks import drain


def _jsonl() -> bytes:
    lines = [
        json.dumps({"subject": name, "question": q, "answer": a})
        for name in PEOPLE
        for q, a in facts_of(name)
    ]
    return ("\n".join(lines) + "\n").encode()


def _register_and_train(
    client: TestClient, ml: str, sent: SentTasks, tiny_lm: Path, retain: Path
) -> str:
    name = f"ft-{uuid.uuid4().hex[:6]}"
    body = generative_model_body(name, tiny_lm, retain)
    body["config"]["finetune"] = FINETUNE
    body["policy"]["strategy"] = "both"
    r = client.post("/v1/models", json=body, headers=auth(ml))
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "registered"
    r = client.post(
        f"/v1/models/{name}/records",
        files={"file": ("r.jsonl", _jsonl(), "application/jsonl")},
        headers=auth(ml),
    )
    assert r.status_code == 201, r.text
    assert (r.json()["records"], r.json()["subjects"]) == (16, 4)
    assert client.post(f"/v1/models/{name}/train", headers=auth(ml)).status_code == 202
    assert drain(sent) == [(TASK_FINETUNE_MODEL, "done")]
    model = client.get(f"/v1/models/{name}", headers=auth(ml)).json()
    assert (model["status"], model["current_version"]) == ("ready", 1)
    return name


def _model_id(session: Session, name: str) -> uuid.UUID:
    """This test's model: the database is shared with every other test of the session, whose
    models have rule sets and versions of their own."""
    return session.scalars(select(MlModel.id).where(MlModel.name == name)).one()


def _run(sent: SentTasks, name: str) -> list[Any]:
    """Run the queued tasks called ``name`` once each; what they send stays queued."""
    from workers.tasks.requests import process_request
    from workers.tasks.rules import update_verifier_rules

    task = {
        TASK_PROCESS_REQUEST: process_request,
        TASK_UPDATE_VERIFIER_RULES: update_verifier_rules,
    }
    return [task[name](*args) for args in sent.pop(name)]


def _ask(client: TestClient, ml: str, model: str, prompt: str) -> dict[str, Any]:
    r = client.post(f"/v1/models/{model}/generate", json={"prompt": prompt}, headers=auth(ml))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _erase(client: TestClient, dpo: str, model: str) -> str:
    rid = client.post(
        "/v1/requests",
        headers=auth(dpo),
        json={
            "subject_id": FORGOTTEN,
            "reason": "art 17",
            "scope": [model],
            "forget": forget_body(),
        },
    ).json()["id"]
    r = client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=auth(dpo))
    assert r.status_code == 200
    return str(rid)


@pytest.fixture
def roles(tokens: dict[str, str]) -> dict[str, str]:
    return {"ml": tokens["ml_engineer"], "dpo": tokens["dpo"]}


def test_both_suppresses_then_removes_exactly_and_retires_the_rules(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    settings: Settings,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ml, dpo = roles["ml"], roles["dpo"]
    model = _register_and_train(app_client, ml, sent_tasks, tiny_lm, retain_file)
    question = facts_of(FORGOTTEN)[0][0]
    before = _ask(app_client, ml, model, question)
    assert (before["model_version"], before["rule_set_version"]) == (1, None)
    model_id = _model_id(session, model)
    served_v1 = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.number == 1)
    ).one()

    rid = _erase(app_client, dpo, model)
    assert _run(sent_tasks, TASK_PROCESS_REQUEST) == ["planned"]
    assert _run(sent_tasks, TASK_UPDATE_VERIFIER_RULES) == ["activated"]
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(dpo)).json()
    # Suppressed, not yet removed: the request waits for the exact action.
    assert request["status"] == "in_progress"
    assert {(a["strategy"], a["status"]) for a in request["actions"]} == {
        ("verifier_rules", "done"),
        ("exact_retrain", "running"),
    }
    [interim] = request["certificates"]
    assert interim["kind"] in ("conformal_risk", "no_guarantee")
    assert interim["body"]["interim"] is True and interim["body"]["exact_removal_due_at"]
    assert interim["plain_words"].startswith("Interim:")
    [exact] = [a for a in request["actions"] if a["strategy"] == "exact_retrain"]
    assert exact["exact_due_at"] and exact["exact_overdue"] is False
    # Past its date the exact action is flagged once by the reaper, and shown overdue.
    from service.finetune.deadlines import flag_overdue_exact
    from workers.tasks.reaper import reap_stuck_jobs

    late = datetime.fromisoformat(exact["exact_due_at"]) + timedelta(seconds=1)
    assert flag_overdue_exact(session, "test", now=late - timedelta(seconds=2)) == 0
    assert flag_overdue_exact(session, "test", now=late) == 1
    session.flush()
    assert reap_stuck_jobs()["exact_overdue"] == 0  # flagged once
    events = app_client.get(f"/v1/requests/{rid}/timeline", headers=auth(dpo)).json()
    assert [e["action"] for e in events].count("action.exact_overdue") == 1
    during = _ask(app_client, ml, model, question)
    assert (during["model_version"], during["rule_set_version"]) == (1, 1)

    # The exact retrain publishes version 2 (and destroys version 1's artifacts) while a
    # generation that has read version 1 is under way: it finishes on version 1's weights.
    from service.rules import finetuned_serving as serving

    real, used, ran = serving.finetuned_generator, [], []

    def switching(settings_: Settings, served: Any) -> Any:
        generator = real(settings_, served)  # loaded (warm) before the switch
        used.append((served.number, served.checkpoint))
        if len(used) == 1:
            ran.extend(drain(sent_tasks))
        return generator

    monkeypatch.setattr(serving, "finetuned_generator", switching)
    mid = _ask(app_client, ml, model, facts_of(RETAINED[0])[0][0])
    assert (TASK_FINETUNE_RETRAIN, "done") in ran and (TASK_FINETUNE_VERIFY, "bit_exact") in ran
    assert mid["model_version"] == 1 and used == [(1, served_v1.manifest["final"])]
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(dpo)).json()
    assert request["status"] == "completed"
    [final] = request["certificates"]
    body = final["body"]
    assert final["kind"] == "exact_retrain" and body["determinism_check"] == "bit_exact"
    # Version 2 switched off at once what had seen the subject; version 3 restored it.
    assert (body["version_before"], body["version_after"]) == (2, 3)
    retrained = body["slices"]  # a fine-tune has no shards
    assert "shards_retrained" not in body and retrained["stage"] == "restored"
    assert retrained["slices_retrained"] == FINETUNE["slices"] - retrained["first_affected_slice"]
    assert retrained["checkpoint_before"] == served_v1.manifest["final"]
    assert body["records_erased"]["train"] == 4
    # Every earlier certificate stays in the history, superseded: the interim rules one, the
    # one issued at switch-off, the restore's (its check under way, as its own job), and the
    # final one with the check's result.
    history = request["certificate_history"]
    assert [c["superseded"] for c in history][-1] is False
    assert all(c["superseded"] for c in history[:-1]) and len(history) >= 4
    assert history[-1]["kind"] == "exact_retrain"
    restored = history[-2]["body"]
    assert restored["slices"]["stage"] == "restored" and restored["determinism_check"] == "pending"
    assert restored["slices"]["checkpoint_after"] == retrained["checkpoint_after"]
    assert retrained["exactness"]["tensors_compared"] > 0
    switched = history[-3]
    off = switched["body"]["slices"]
    off_physical = switched["body"]["physical_deletion"]
    assert switched["kind"] == "exact_retrain" and off["stage"] == "switched_off"
    assert (switched["body"]["version_before"], switched["body"]["version_after"]) == (1, 2)
    assert switched["body"]["determinism_check"] == "not_applicable"
    assert off["slices_retrained"] == 0 and off["retrain_seconds"] == 0.0
    assert off["first_affected_slice"] == retrained["first_affected_slice"]
    assert len(off["served_weights_sha256"]) == len(off["retained_prefix_sha256"]) == 64
    assert "by construction" in switched["body"]["claim"]
    assert "further certificate will supersede" in switched["plain_words"]
    served_v2 = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.number == 2)
    ).one()
    assert served_v2.manifest["final"] == off["checkpoint_after"]
    assert served_v2.metrics["stage"] == "switched_off"
    # Exact by construction: what version 2 serves is a checkpoint the first fine-tune stored
    # before the subject's slice (or the untrained adapters when theirs was the first).
    assert off["checkpoint_after"] not in off["superseded_checkpoints"]
    assert off["superseded_checkpoints"] == retrained["superseded_checkpoints"]

    # What saw the subject is gone from the store, and the certificate lists it.
    store = open_store(settings.artifact_location)
    destroyed = body["destroyed_artifacts"]
    checkpoints = [d for d in destroyed if d["type"] == "checkpoint"]
    assert checkpoints and all(
        d["deleted"] and d["sha256"] and d["destroyed_at"] for d in destroyed
    )
    assert retrained["checkpoint_before"] in {d["checkpoint"] for d in checkpoints}
    for d in checkpoints:
        assert not store.exists(checkpoint_key(d["checkpoint"]))
    assert not merged_dir(merged_root(settings), retrained["checkpoint_before"]).exists()
    assert {d["type"] for d in destroyed} == {"checkpoint", "merged_weights"}
    # The one host here destroyed its copies itself and says so; the final words still name
    # the record key the switch-off destroyed, and when.
    hosts = body["hosts"]
    assert (hosts["confirmed"], hosts["total"], hosts["pending"]) == (1, 1, 0)
    assert "deleted on 1 of 1 server that serves this model" in final["plain_words"]
    physical = body["physical_deletion"]
    assert physical["keys_destroyed"] and physical["keys_destroyed_at"]
    assert physical["keys_destroyed_at"] == off_physical["keys_destroyed_at"]
    assert "key id sub_" in final["plain_words"]

    # The rules are retired in a new version; serving switched to the new weights.
    rows = session.scalars(
        select(RuleSetVersion)
        .where(RuleSetVersion.model_id == model_id)
        .order_by(RuleSetVersion.version)
    ).all()
    assert [(r.version, r.status, r.request_ids) for r in rows] == [
        (1, "superseded", [rid]),
        (2, "active", []),
    ]
    assert rows[1].calibration["retired_requests"] == [rid]
    after = _ask(app_client, ml, model, question)
    served_v3 = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.number == 3)
    ).one()
    assert used[1] == (3, served_v3.manifest["final"]) == (3, retrained["checkpoint_after"])
    assert (after["model_version"], after["rule_set_version"], after["reason"]) == (
        3,
        2,
        "no_rules",
    )
    versions = app_client.get(f"/v1/models/{model}/versions", headers=auth(ml)).json()
    assert [(v["number"], v["cause"], v["purged"]) for v in versions] == [
        (1, "training", True),
        (2, "erasure", False),
        (3, "erasure", False),
    ]
    report = app_client.get(f"/v1/requests/{rid}/report", headers=auth(dpo)).json()
    issued = [e for e in report["events"] if e["action"] == "certificate.issued"]
    assert issued[-1]["details"]["kind"] == "exact_retrain"
    # The check's certificate supersedes the restore's, which supersedes the switch-off one.
    assert [i["details"]["supersedes"]["kind"] for i in issued[-2:]] == ["exact_retrain"] * 2
    assert issued[-3]["details"]["supersedes"]["kind"] == interim["kind"]  # the switch-off
    assert FORGOTTEN not in json.dumps(report) and FORGOTTEN not in json.dumps(destroyed)
    assert verify_chain(session).ok


def test_failed_exact_step_leaves_the_rules_active(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    settings: Settings,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.tasks.finetune import finetune_retrain

    model = _register_and_train(app_client, roles["ml"], sent_tasks, tiny_lm, retain_file)
    rid = _erase(app_client, roles["dpo"], model)
    _run(sent_tasks, TASK_PROCESS_REQUEST)
    _run(sent_tasks, TASK_UPDATE_VERIFIER_RULES)
    sent_tasks.pop(TASK_CALIBRATE_BUDGET)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr("service.finetune.switch_off.switch_off_orders", broken)
    for _ in range(settings.max_job_attempts):
        [[job_id]] = sent_tasks.pop(TASK_FINETUNE_RETRAIN)
        with pytest.raises(RuntimeError):
            finetune_retrain(job_id)
    assert sent_tasks.pop(TASK_FINETUNE_RETRAIN) == []

    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    assert (request["status"], request["failure_code"]) == ("failed", "retrain_error")
    assert {(a["strategy"], a["status"]) for a in request["actions"]} == {
        ("verifier_rules", "done"),
        ("exact_retrain", "failed"),
    }
    [current] = request["certificates"]
    assert current["kind"] != "exact_retrain" and current["body"]["interim"] is True
    active = session.scalars(
        select(RuleSetVersion).where(
            RuleSetVersion.model_id == _model_id(session, model), RuleSetVersion.status == "active"
        )
    ).one()
    assert active.request_ids == [rid]  # still suppressed
    out = _ask(app_client, roles["ml"], model, facts_of(FORGOTTEN)[0][0])
    assert (out["model_version"], out["rule_set_version"]) == (1, 1)


def test_a_retrain_stopped_after_publishing_is_finished_on_redelivery(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    settings: Settings,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    from service.finetune.publish import destroy_artifacts
    from workers.tasks import finetune

    model = _register_and_train(app_client, roles["ml"], sent_tasks, tiny_lm, retain_file)
    rid = _erase(app_client, roles["dpo"], model)
    _run(sent_tasks, TASK_PROCESS_REQUEST)
    _run(sent_tasks, TASK_UPDATE_VERIFIER_RULES)
    real, calls = destroy_artifacts, []

    def fails_once(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise OSError("store unreachable")
        return real(*args)

    monkeypatch.setattr(finetune, "destroy_artifacts", fails_once)
    [[job_id]] = sent_tasks.pop(TASK_FINETUNE_RETRAIN)
    assert finetune.finetune_retrain(job_id) == "requeued"
    # Switched off (serving has moved) but not closed: the rules still stand.
    assert (
        app_client.get(f"/v1/models/{model}", headers=auth(roles["ml"])).json()["current_version"]
        == 2
    )
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    assert request["status"] == "in_progress"

    assert sent_tasks.pop(TASK_FINETUNE_RETRAIN) == [[job_id]]  # sent again
    assert finetune.finetune_retrain(job_id) == "done"  # closes the switch, then restores
    assert finetune.finetune_retrain(job_id) == "not_claimed"  # and again: nothing left to do
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    assert request["status"] == "completed"
    versions = app_client.get(f"/v1/models/{model}/versions", headers=auth(roles["ml"])).json()
    assert [v["number"] for v in versions] == [1, 2, 3]  # the switch was not published twice
    [final] = request["certificates"]
    destroyed = final["body"]["destroyed_artifacts"]
    assert final["kind"] == "exact_retrain" and destroyed
    assert final["body"]["slices"]["stage"] == "restored"
    assert all(d["deleted"] and d["sha256"] for d in destroyed)
    store = open_store(settings.artifact_location)
    assert not any(store.exists(checkpoint_key(d["checkpoint"])) for d in destroyed)


def test_a_failed_restore_leaves_the_removal_in_force(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    settings: Settings,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The background retrain fails for good: the subject stays removed (the switched-off
    version serves, the request is completed with the switch-off certificate) and the
    audit log says the job failed."""
    from workers.tasks.finetune import finetune_retrain

    model = _register_and_train(app_client, roles["ml"], sent_tasks, tiny_lm, retain_file)
    rid = _erase(app_client, roles["dpo"], model)
    _run(sent_tasks, TASK_PROCESS_REQUEST)
    _run(sent_tasks, TASK_UPDATE_VERIFIER_RULES)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr("service.finetune.switch_off.train_sliced", broken)
    for _ in range(settings.max_job_attempts):
        [[job_id]] = sent_tasks.pop(TASK_FINETUNE_RETRAIN)
        with pytest.raises(RuntimeError):
            finetune_retrain(job_id)
    assert sent_tasks.pop(TASK_FINETUNE_RETRAIN) == []
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    assert request["status"] == "completed"
    [current] = request["certificates"]
    assert current["body"]["slices"]["stage"] == "switched_off"
    versions = app_client.get(f"/v1/models/{model}/versions", headers=auth(roles["ml"])).json()
    assert [(v["number"], v["purged"]) for v in versions] == [(1, True), (2, False)]
    out = _ask(app_client, roles["ml"], model, facts_of(FORGOTTEN)[0][0])
    assert out["model_version"] == 2
    events = app_client.get(f"/v1/requests/{rid}/timeline", headers=auth(roles["dpo"])).json()
    assert [e["action"] for e in events].count("certificate.issued") >= 2
    failed = session.scalars(select(Job).where(Job.id == uuid.UUID(job_id))).one()
    assert (failed.status, failed.error_code) == ("failed", "retrain_error")


def test_the_budget_is_calibrated_on_the_served_finetuned_weights(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    settings: Settings,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    """B and the model's own leaks are measured on the weights that answer users: the
    current version's merged fine-tune, not the base folder it was fine-tuned from."""
    from service.rules import budget
    from service.rules.finetuned_serving import finetuned_generator, served_version
    from service.rules.runtime import generator

    model = _register_and_train(app_client, roles["ml"], sent_tasks, tiny_lm, retain_file)
    _erase(app_client, roles["dpo"], model)
    _run(sent_tasks, TASK_PROCESS_REQUEST)
    _run(sent_tasks, TASK_UPDATE_VERIFIER_RULES)
    [[rule_set_id]] = sent_tasks.pop(TASK_CALIBRATE_BUDGET)
    inputs = budget.load_budget(session, settings, uuid.UUID(rule_set_id))
    assert not isinstance(inputs, str)
    row = session.scalars(select(MlModel).where(MlModel.name == model)).one()
    served = served_version(session, row)
    loaded = inputs.served_weights()
    assert loaded is finetuned_generator(settings, served)
    assert loaded is not generator(str(tiny_lm))
    assert served.number == 1 and loaded.model is not generator(str(tiny_lm)).model
    # Once the rules are no longer the ones served, the calibration stops before it generates.
    assert budget.still_served(session, inputs.rule_set_id)
    session.get_one(RuleSetVersion, inputs.rule_set_id).status = RuleSetStatus.superseded
    session.flush()
    with pytest.raises(budget.Abandoned):
        budget.calibrate(inputs, lambda: budget.still_served(session, inputs.rule_set_id))


def _restored(
    app_client: TestClient, roles: dict[str, str], sent: SentTasks, tiny_lm: Path, retain: Path
) -> tuple[str, str, str]:
    """A fine-tune whose erasure is switched off and restored; returns the model, the request
    and the check job (opened at switch-off, not yet run)."""
    from workers.tasks.finetune import finetune_retrain

    model = _register_and_train(app_client, roles["ml"], sent, tiny_lm, retain)
    rid = _erase(app_client, roles["dpo"], model)
    _run(sent, TASK_PROCESS_REQUEST)
    _run(sent, TASK_UPDATE_VERIFIER_RULES)
    sent.pop(TASK_CALIBRATE_BUDGET)
    [[job_id]] = sent.pop(TASK_FINETUNE_RETRAIN)
    assert finetune_retrain(job_id) == "done"
    [[check_id]] = sent.pop(TASK_FINETUNE_VERIFY)
    return model, rid, check_id


def test_the_check_is_its_own_job_and_a_killed_one_runs_again(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy import text

    from workers.tasks.finetune import finetune_verify
    from workers.tasks.reaper import reap_stuck_jobs

    model, rid, check_id = _restored(app_client, roles, sent_tasks, tiny_lm, retain_file)
    # Removed and restored before the check has run: the request is complete.
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    [current] = request["certificates"]
    assert request["status"] == "completed"
    assert current["body"]["determinism_check"] == "pending"
    assert "under way" in current["plain_words"]

    def killed(*_: Any, **__: Any) -> Any:
        raise SystemExit("worker process killed during the check")

    with monkeypatch.context() as m:
        m.setattr("service.finetune.verify.train_sliced_in_memory", killed)
        with pytest.raises(SystemExit):
            finetune_verify(check_id)
    assert finetune_verify(check_id) == "not_claimed"  # redelivered: the job looks taken
    # The removal stays in force: the restored version serves, the request stays complete.
    out = _ask(app_client, roles["ml"], model, facts_of(FORGOTTEN)[0][0])
    assert out["model_version"] == 3
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    assert request["status"] == "completed"
    # The reaper finds the silent check and sends it again; it runs to the end.
    session.execute(
        text("UPDATE jobs SET heartbeat_at = now() - interval '1 day' WHERE id = :id"),
        {"id": check_id},
    )
    session.commit()
    assert reap_stuck_jobs()["requeued"] >= 1
    assert [check_id] in sent_tasks.pop(TASK_FINETUNE_VERIFY)
    assert finetune_verify(check_id) == "bit_exact"
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    [final] = request["certificates"]
    assert final["body"]["determinism_check"] == "bit_exact"
    assert final["body"]["slices"]["exactness"]["tensors_compared"] > 0
    assert request["certificate_history"][-2]["body"]["determinism_check"] == "pending"


def test_the_check_opens_at_switch_off_and_waits_for_its_restore(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check needs no restored weights to start, so it is sent with the switch-off and
    fine-tunes from scratch beside the restore. Done first, it compares nothing while the
    restore waits for a retry: it is sent again, and matches once the restore is published."""
    from workers.tasks.finetune import finetune_retrain, finetune_verify

    model = _register_and_train(app_client, roles["ml"], sent_tasks, tiny_lm, retain_file)
    rid = _erase(app_client, roles["dpo"], model)
    _run(sent_tasks, TASK_PROCESS_REQUEST)
    _run(sent_tasks, TASK_UPDATE_VERIFIER_RULES)
    sent_tasks.pop(TASK_CALIBRATE_BUDGET)
    [[job_id]] = sent_tasks.pop(TASK_FINETUNE_RETRAIN)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("worker lost its disk for a moment")

    with monkeypatch.context() as m:
        m.setattr("service.finetune.switch_off.train_sliced", broken)
        with pytest.raises(RuntimeError):
            finetune_retrain(job_id)
    # Switched off, the restore waits for its retry: the check was sent at the switch-off.
    [[check_id]] = sent_tasks.pop(TASK_FINETUNE_VERIFY)
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    assert request["status"] == "completed"
    assert request["certificates"][0]["body"]["slices"]["stage"] == "switched_off"
    assert finetune_verify(check_id) == "requeued"
    check = session.get_one(Job, uuid.UUID(check_id))
    session.refresh(check)
    assert check.status == "pending" and "exactness" not in check.result
    assert [check_id] in sent_tasks.pop(TASK_FINETUNE_VERIFY)
    # The restore runs again and publishes; no second check is opened for the same weights.
    [[again]] = sent_tasks.pop(TASK_FINETUNE_RETRAIN)
    assert finetune_retrain(again) == "done"
    assert sent_tasks.pop(TASK_FINETUNE_VERIFY) == []
    assert finetune_verify(check_id) == "bit_exact"
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    [final] = request["certificates"]
    assert final["body"]["slices"]["stage"] == "restored"
    assert final["body"]["determinism_check"] == "bit_exact"
    assert verify_chain(session).ok


def test_a_failed_check_reopens_the_action_and_says_so(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    settings: Settings,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    """The restored checkpoint is replaced in the store by other weights (a corrupted store):
    the from-scratch check does not match, the action is re-opened and the log says why."""
    from workers.tasks.finetune import finetune_verify

    _, rid, check_id = _restored(app_client, roles, sent_tasks, tiny_lm, retain_file)
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    [restored] = request["certificates"]
    switched = request["certificate_history"][-2]["body"]["slices"]
    store = open_store(settings.artifact_location)
    store.put(
        checkpoint_key(restored["body"]["slices"]["checkpoint_after"]),
        store.get(checkpoint_key(switched["checkpoint_after"])),
    )
    assert finetune_verify(check_id) == "mismatch"
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(roles["dpo"])).json()
    assert request["status"] == "in_progress"
    [exact] = [a for a in request["actions"] if a["strategy"] == "exact_retrain"]
    assert exact["status"] == "running"
    [current] = request["certificates"]
    assert current["body"]["determinism_check"] == "mismatch"
    assert "did not match" in current["plain_words"]
    events = app_client.get(f"/v1/requests/{rid}/timeline", headers=auth(roles["dpo"])).json()
    actions = [e["action"] for e in events]
    assert actions.index("action.reopened") < actions.index("request.reopened")
    assert verify_chain(session).ok


def test_a_layered_finetune_switches_off_and_restores_exactly(
    app_client: TestClient,
    roles: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    """``layered``: each slice trains one of the tiny model's two layers; the erasure is
    switched off, restored and checked bit for bit like a cumulative fine-tune."""
    ml, dpo = roles["ml"], roles["dpo"]
    body = generative_model_body(f"ft-{uuid.uuid4().hex[:6]}", tiny_lm, retain_file)
    body["policy"]["strategy"] = "both"
    body["config"]["finetune"] = {**FINETUNE, "slices": 4, "adapter_layers": 2, "layered": True}
    r = app_client.post("/v1/models", json=body, headers=auth(ml))
    assert r.status_code == 422  # a layer group per slice: 2 layers cannot hold 4
    [detail] = r.json()["error"]["details"]
    assert detail["loc"][-1] == "finetune" and detail["type"] == "value_error"
    body["config"]["finetune"] = {**FINETUNE, "slices": 2, "adapter_layers": 2, "layered": True}
    name = body["name"]
    assert app_client.post("/v1/models", json=body, headers=auth(ml)).status_code == 201
    r = app_client.post(
        f"/v1/models/{name}/records",
        files={"file": ("r.jsonl", _jsonl(), "application/jsonl")},
        headers=auth(ml),
    )
    assert r.status_code == 201, r.text
    assert app_client.post(f"/v1/models/{name}/train", headers=auth(ml)).status_code == 202
    assert drain(sent_tasks) == [(TASK_FINETUNE_MODEL, "done")]
    rid = _erase(app_client, dpo, name)
    ran = drain(sent_tasks)
    assert (TASK_FINETUNE_RETRAIN, "done") in ran and (TASK_FINETUNE_VERIFY, "bit_exact") in ran
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(dpo)).json()
    assert request["status"] == "completed"
    [final] = request["certificates"]
    assert final["body"]["determinism_check"] == "bit_exact"
    stages = [c["body"].get("slices", {}).get("stage") for c in request["certificate_history"]]
    assert stages[-3:] == ["switched_off", "restored", "restored"]
    versions = session.scalars(
        select(ModelVersion)
        .where(ModelVersion.model_id == _model_id(session, name))
        .order_by(ModelVersion.number)
    ).all()
    assert [v.manifest["config"]["layered"] for v in versions] == [True, True, True]
