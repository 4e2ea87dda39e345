"""Inference-time unlearning from approval to guarded serving, tasks run directly."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.generative.probes import oracle_reveals
from models.generative.rules import Fact, ForgetSpec
from service.audit import verify_chain
from service.db.tables import (
    AuditEvent,
    CalibrationRecord,
    ErasureRequest,
    RequestAction,
    RuleSetVersion,
)
from service.queue.names import TASK_CALIBRATE_BUDGET, TASK_UPDATE_VERIFIER_RULES
from service.reports.plain import certificate_words
from tests.support.api import SentTasks, auth
from tests.support.generative_data import (
    FORGOTTEN,
    RETAINED,
    facts_of,
    forget_body,
    generative_model_body,
)
from tests.support.live import artifacts_dir
from tests.support.pdf_tools import pdf_text, render_first_page
from tests.support.tasks import drain

NAME = "support-bot"


@pytest.fixture
def bot(
    app_client: TestClient, tokens: dict[str, str], tiny_lm: Path, retain_file: Path
) -> dict[str, str]:
    r = app_client.post(
        "/v1/models",
        json=generative_model_body(NAME, tiny_lm, retain_file),
        headers=auth(tokens["ml_engineer"]),
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "ready"
    return {"ml": tokens["ml_engineer"], "dpo": tokens["dpo"]}


def _ask(client: TestClient, token: str, prompt: str) -> dict[str, Any]:
    r = client.post(f"/v1/models/{NAME}/generate", json={"prompt": prompt}, headers=auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _erase(client: TestClient, dpo: str, name: str, forget: dict[str, Any]) -> str:
    rid = client.post(
        "/v1/requests",
        headers=auth(dpo),
        json={"subject_id": name, "reason": "art 17", "scope": [NAME], "forget": forget},
    ).json()["id"]
    assert (
        client.post(
            f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=auth(dpo)
        ).status_code
        == 200
    )
    return str(rid)


def _spec(name: str) -> ForgetSpec:
    return ForgetSpec(subject_names=[name], facts=[Fact(q, a) for q, a in facts_of(name)])


def test_request_activates_rules_and_the_fact_is_no_longer_revealed(
    app_client: TestClient,
    bot: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    tmp_path: Path,
) -> None:
    question, _ = facts_of(FORGOTTEN)[0]
    before = _ask(app_client, bot["ml"], question)
    assert before["rule_set_version"] is None
    assert oracle_reveals(before["text"], _spec(FORGOTTEN))  # the model knew it

    rid = _erase(app_client, bot["dpo"], FORGOTTEN, forget_body())
    ran = drain(sent_tasks)
    assert (TASK_UPDATE_VERIFIER_RULES, "activated") in ran
    assert (TASK_CALIBRATE_BUDGET, "calibrated") in ran

    request = app_client.get(f"/v1/requests/{rid}", headers=auth(bot["dpo"])).json()
    assert request["status"] == "completed"
    [cert] = request["certificates"]
    body = cert["body"]
    positives = session.scalar(
        select(func.count())
        .select_from(CalibrationRecord)
        .where(CalibrationRecord.kind == "positive_score")
    )
    assert body["n"] == positives and body["alpha"] == 0.1 and body["delta"] == 0.05
    assert cert["kind"] == ("conformal_risk" if body["certified"] else "no_guarantee")
    assert request["certified"] is body["certified"]
    assert body["assumptions"] and cert["plain_words"]
    # The request's own encrypted copy is gone once the rules hold what is needed.
    assert session.get_one(ErasureRequest, uuid.UUID(rid)).forget_content is None

    for q, _ in facts_of(FORGOTTEN):
        out = _ask(app_client, bot["ml"], q)
        assert out["rule_set_version"] == 1
        assert not oracle_reveals(out["text"], _spec(FORGOTTEN)), "a forgotten fact leaked"
        # The question names the forgotten subject: a flagged answer is refused without
        # spending regeneration rounds on it.
        assert out["rounds_used"] == 0
        assert out["reason"] in ("accepted", "subject_in_query")
    first = _ask(app_client, bot["ml"], question)
    assert (first["refused"], first["reason"]) == (True, "subject_in_query")
    kept = [_ask(app_client, bot["ml"], q) for name in RETAINED for q, _ in facts_of(name)]
    answered = [
        o
        for o, (_, a) in zip(kept, [p for n in RETAINED for p in facts_of(n)], strict=True)
        if not o["refused"] and a in o["text"]
    ]
    assert len(answered) >= 0.75 * len(kept), "other subjects are no longer answered"

    versions = app_client.get(f"/v1/models/{NAME}/rule-sets", headers=auth(bot["ml"])).json()
    [v1] = versions
    assert v1["status"] == "active" and v1["calibration"]["budget"]["status"] == "calibrated"
    # B is calibrated on the probes refinement handles: none of them names the subject. The
    # draw stops at 6 handled probes (budget_probes) or 12 drawn (max_budget_probes).
    budget = v1["calibration"]["budget"]
    assert 0 < budget["probes_generated"] <= 12 and budget["n"] <= budget["probes_generated"]
    assert budget["n"] <= 6
    assert FORGOTTEN not in str(versions)
    assert verify_chain(session).ok

    # The activation's certificate was re-issued once B was calibrated: the current one
    # carries B's figures, the first stays in the history and in the audit log.
    history = request["certificate_history"]
    assert [c["superseded"] for c in history] == [True, False]
    assert history[0]["body"]["budget_reason"] == "the regeneration budget was not calibrated"
    assert cert["body"]["budget_n"] == budget["n"]
    assert cert["body"]["budget_reason"] == budget["reason"]
    report = app_client.get(f"/v1/requests/{rid}/report", headers=auth(bot["dpo"])).json()
    issued = [e for e in report["events"] if e["action"] == "certificate.issued"]
    assert len(issued) == 2 and "supersedes" in issued[1]["details"]
    assert report["summary"]["current_certificates"] == [cert["body"]]
    assert len(report["summary"]["certificates"]) == 2
    # What the DPO downloads: the final certificate in its own words (the refinement rule in
    # force among them), the interim one counted as superseded, and no forgotten name.
    pdf = app_client.get(
        f"/v1/requests/{rid}/report", params={"format": "pdf"}, headers=auth(bot["dpo"])
    )
    assert pdf.status_code == 200, pdf.text
    text, _ = pdf_text(pdf.content)
    # Read across page breaks: the running footer can fall inside a paragraph.
    text = re.sub(r"lethe · Erasure request \S+ Page \d+ of \d+ ", "", text)
    # The DPO reads the guarantee in plain words; the figures sit in the engineers' details.
    assert certificate_words(cert["body"]) in text
    assert "at most 10 % of answers that would reveal them can get through" in text
    assert f"α (miss-rate target) {body['alpha']}" in text
    assert f"Refinement rule in force {body['refinement_rule']}" in text
    assert f"Regenerations allowed {body['serving_budget']}" in text
    assert "Calibration stage final" in text
    assert "1 earlier certificate(s) were replaced by the ones above" in text
    assert "model's own answers were not part of it" not in text
    assert FORGOTTEN not in text
    assert render_first_page(pdf.content, tmp_path).stat().st_size > 2000
    (artifacts_dir() / "guard-request-report.pdf").write_bytes(pdf.content)
    # The interim certificate rests on synthetic leaks; the final one on those pooled with the
    # model's own leaking answers, with λ recalibrated on them and the rule in force named.
    assert history[0]["body"]["calibration_stage"] == "interim"
    assert "model's own answers were not part of it" in history[0]["body"]["plain_words"]
    assert body["calibration_stage"] == "final"
    # Retained answers are scored off the critical path: the false-flag rate comes with the
    # final certificate, and the interim one does not pretend to have it.
    assert history[0]["body"]["false_flag_rate"] is None
    assert v1["calibration"]["interim"]["false_flag_rate"] is None
    assert body["false_flag_rate"] == v1["calibration"]["false_flag_rate"] is not None
    assert body["calibration_evidence"] == v1["calibration"]["positives_source"]
    assert (
        body["n"] == v1["calibration"]["positives_synthetic"] + v1["calibration"]["positives_model"]
    )
    assert v1["calibration"]["model_leaks"]["probes_generated"] > 0
    assert body["refinement_rule"] == v1["calibration"]["refinement_rule"]
    assert body["refinement_rule"] == ("conformal_budget" if budget["certified"] else "max_budget")
    # 12 probes at most cannot certify an exit at α_B = 0.2, δ = 0.05 (n ≥ 14 rescued needed):
    # it is stored with its reason and never served.
    assert body["exit_certified"] is False and body["serving_exit_threshold"] is None
    assert v1["calibration"]["serving_exit_threshold"] is None
    assert "No early exit is in force" in cert["plain_words"]
    recalibrated = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "rules.recalibrated")
    ).one()
    assert recalibrated.seq < max(e["seq"] for e in issued)
    assert recalibrated.details["positives_model"] == v1["calibration"]["positives_model"]


def test_small_calibration_gives_no_guarantee(
    app_client: TestClient, bot: dict[str, str], sent_tasks: SentTasks
) -> None:
    # One short fact: far fewer leaking texts than ln δ / ln(1 − α) ≈ 29 for α=0.1, δ=0.05.
    forget = {"names": [], "facts": [{"question": None, "answer": "She kept a white cat."}]}
    rid = _erase(app_client, bot["dpo"], "Tamsin Orlicki", forget)
    drain(sent_tasks)
    request = app_client.get(f"/v1/requests/{rid}", headers=auth(bot["dpo"])).json()
    assert request["status"] == "completed" and request["certified"] is False
    [cert] = request["certificates"]
    assert cert["kind"] == "no_guarantee"
    assert cert["body"]["threshold"] is None and cert["body"]["reason"]
    assert "No guarantee" in cert["plain_words"]


def test_versions_supersede_and_redelivery_is_harmless(
    app_client: TestClient, bot: dict[str, str], sent_tasks: SentTasks, session: Session
) -> None:
    from workers.tasks.rules import update_verifier_rules

    first = _erase(app_client, bot["dpo"], FORGOTTEN, forget_body())
    drain(sent_tasks)
    second = _erase(app_client, bot["dpo"], RETAINED[0], forget_body(RETAINED[0]))
    ran = drain(sent_tasks)
    action = session.scalars(
        select(RequestAction).where(RequestAction.request_id == uuid.UUID(second))
    ).one()
    # This model's versions only: the database may hold other tests' models.
    of_model = select(RuleSetVersion).where(RuleSetVersion.model_id == action.model_id)
    rows = session.scalars(of_model.order_by(RuleSetVersion.version)).all()
    assert [(r.version, r.status) for r in rows] == [(1, "superseded"), (2, "active")]
    assert rows[1].request_ids == sorted([first, second])
    # The second activation scored only its own request and reused the first one's stored
    # evidence; the pooled λ is calibrated on both requests' leaks.
    v1, v2 = rows[0].calibration, rows[1].calibration
    assert (v1["requests_scored"], v2["requests_scored"]) == (1, 1)
    assert v2["evidence"]["by_request"][first] == v1["evidence"]["by_request"][first]
    assert v2["evidence"]["key"] == v1["evidence"]["key"]
    pooled = sum(len(ev["positive"]) for ev in v2["evidence"]["by_request"].values())
    # Each version's final λ pools its requests' synthetic leaks with the model's own leaking
    # answers (the budget task's recalibration).
    assert v2["threshold"]["n"] == pooled + v2["positives_model"]
    assert v2["positives_model"] == len(v2["evidence"]["model_leaks"])
    assert pooled > v1["positives_synthetic"]
    # Stored evidence is the next activation's cache, not something the API shows.
    listed = app_client.get(f"/v1/models/{NAME}/rule-sets", headers=auth(bot["ml"])).json()
    assert listed and all("evidence" not in v["calibration"] for v in listed)
    # A redelivered rules task for a finished action changes nothing.
    assert update_verifier_rules(str(action.id)) == "terminal"
    assert session.scalar(select(func.count()).select_from(of_model.subquery())) == 2
    assert (TASK_UPDATE_VERIFIER_RULES, "activated") in ran
