"""PDF reports: parsed back (pypdf) for the facts they must state, and rendered (pdftoppm); the
request PDF's wording for every status (a matrix)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.security import subject_ref
from service.db.tables import TrainingRecord
from service.erasure.deadlines import days_left
from service.reports.pdf import period_pdf, request_pdf
from service.reports.plain import deadline
from tests.support.api import SentTasks, auth
from tests.support.live import artifacts_dir
from tests.support.pdf_tools import pdf_text, render_first_page
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY
from tests.support.tasks import drain

# A retrain here leaves content-addressed checkpoints: in a store of this module's own, so
# that no later test finds them instead of training.
pytestmark = pytest.mark.usefixtures("own_artifacts")


NAME = MODEL_BODY["name"]
# Words a DPO should not have to read outside "Details for engineers".
JARGON = ("shard", "slice", "vacuum", "write-ahead", "wal ", "bit_exact", "lineage", "loadable")


def a_trained_subject(session: Session) -> str:
    settings = get_settings()
    for i in range(80):
        subject = f"S-{i:04d}"
        found = session.scalar(
            select(TrainingRecord.id).where(
                TrainingRecord.subject_ref == subject_ref(settings, subject),
                TrainingRecord.split == "train",
            )
        )
        if found is not None:
            return subject
    raise AssertionError("no subject in the train split")


@pytest.fixture
def completed_request(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    trained_model: dict[str, Any],
    session: Session,
) -> str:
    h = auth(tokens["dpo"])
    body = {"subject_id": a_trained_subject(session), "reason": "art 17", "scope": [NAME]}
    rid = str(app_client.post("/v1/requests", json=body, headers=h).json()["id"])
    assert app_client.post(
        f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=h
    ).is_success
    drain(sent_tasks)
    assert app_client.get(f"/v1/requests/{rid}", headers=h).json()["status"] == "completed"
    return rid


def test_request_pdf_states_the_facts(
    app_client: TestClient, tokens: dict[str, str], completed_request: str, tmp_path: Path
) -> None:
    rid = completed_request
    h = auth(tokens["auditor"])
    report = app_client.get(f"/v1/requests/{rid}/report", headers=h).json()
    r = app_client.get(f"/v1/requests/{rid}/report", params={"format": "pdf"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    text, pages = pdf_text(r.content)
    [cert] = report["summary"]["certificates"]
    [shard] = cert["shards_retrained"]
    plain, engineers = text.split("Details for engineers", 1)
    for fact in (
        rid,
        report["summary"]["subject_ref"],
        "Deadline met: answered on",
        "the part of the model that saw this person's data was retrained",
        "An independent retraining matched it exactly",
        "Request received",
        "Request completed, within the deadline",
    ):
        assert fact in plain, fact
    for word in JARGON:
        at = plain.lower().find(word)
        assert at < 0, plain[max(at - 150, 0) : at + 50]
    for fact in (
        "exact_retrain",
        f"retrained from slice {shard['first_affected_slice']} of {shard['slices_total']}",
        "bit_exact",
        shard["lineage_hash"],
        shard["checkpoint_after"],
        shard["superseded_checkpoints"][0][:16],
        f"{shard['accuracy_before']:.4f} -> {shard['accuracy_after']:.4f}",
        "The audit log verifies",
        report["chain"]["last_hash"],
    ):
        assert fact in engineers, fact
    assert f"Page 1 of {pages}" in text
    assert CANARY_SUBJECT not in text
    assert render_first_page(r.content, tmp_path).stat().st_size > 2000
    (artifacts_dir() / "request-report.pdf").write_bytes(r.content)


def test_period_pdf_and_roles(
    app_client: TestClient, tokens: dict[str, str], completed_request: str
) -> None:
    r = app_client.get("/v1/audit/export", params={"format": "pdf"}, headers=auth(tokens["dpo"]))
    assert r.status_code == 200
    text, _ = pdf_text(r.content)
    (artifacts_dir() / "period-report.pdf").write_bytes(r.content)
    assert "Audit period report" in text and completed_request in text
    assert "Certificates issued 1" in text and "The audit log verifies" in text
    denied = app_client.get(
        "/v1/audit/export", params={"format": "pdf"}, headers=auth(tokens["ml_engineer"])
    )
    assert denied.status_code == 403


CONFORMAL = {
    "kind": "conformal_risk",
    "model": "support-bot",
    "alpha": 0.1,
    "delta": 0.05,
    "n": 59,
    "threshold": 0.4123,
    "empirical_miss_rate": 0.0,
    "miss_rate_upper_bound": 0.0495,
    "budget": 2,
    "alpha_b": 0.2,
    "false_flag_rate": 0.03,
    "rule_set_version": 3,
    "reason": None,
    "assumptions": ["The calibration probes are exchangeable with future queries."],
    "plain_words": "With probability at least 95 %, at most 10 % of leaking answers get past.",
}


def _report(events: list[dict[str, Any]], ok: bool = True) -> dict[str, Any]:
    return {
        "report": "erasure_request",
        "request_id": "r-1",
        "summary": {
            "status": "completed",
            "subject_ref": "sub_abc",
            "received_at": "2026-01-01T10:00:00+00:00",
            "due_at": "2026-03-31T10:00:00+00:00",
            "completed_at": "2026-03-05T10:00:00+00:00",
            "closed_at": "2026-03-05T10:00:00+00:00",
            "overdue": False,
            "legal_ground": "b",
            "extensions": [{"months": 2, "due_at": "2026-03-31T10:00:00+00:00"}],
            "certificates": [CONFORMAL],
        },
        "events": events,
        "chain": {
            "ok": ok,
            "events_checked": 3,
            "last_seq": 3,
            "last_hash": "f" * 64,
            "first_broken_seq": None if ok else 2,
            "problem": None if ok else "row content does not match its hash",
        },
    }


def _event(seq: int, at: str, action: str, **details: Any) -> dict[str, Any]:
    return {"seq": seq, "occurred_at": at, "action": action, "details": details}


def test_conformal_certificate_extension_and_broken_chain() -> None:
    events = [
        _event(1, "2026-01-01T10:00:00+00:00", "request.received", legal_ground="b"),
        _event(
            2,
            "2026-01-20T10:00:00+00:00",
            "request.deadline_extended",
            months=2,
            due_at="2026-03-31T10:00:00+00:00",
        ),
        _event(3, "2026-03-05T10:00:00+00:00", "request.completed", overdue=False),
    ]
    report = _report(events, ok=False)
    earlier = {**CONFORMAL, "budget": None, "plain_words": "Before B was calibrated."}
    report["summary"]["certificates"] = [earlier, CONFORMAL]
    report["summary"]["current_certificates"] = [CONFORMAL]
    text, _ = pdf_text(request_pdf(report))
    assert "1 earlier certificate(s) were replaced" in text
    assert "Before B was calibrated" not in text
    for fact in (
        "consent withdrawn",
        "+2 month(s) to 2026-03-31",
        "Deadline met: answered on 5 March 2026, due 31 March 2026",
        "α (miss-rate target) 0.1",
        "δ (failure probability) 0.05",
        "n (calibration leaks) 59",
        "λ (threshold) 0.4123",
        "Upper confidence bound 0.0495",
        "B (regeneration budget) 2",
        "Rule-set version 3",
        "exchangeable with future queries",
        "does NOT verify, from event #2",
    ):
        assert fact in text, fact
    period = period_pdf(
        {
            **_report(events),
            "report": "period",
            "since": None,
            "until": None,
            "requests_received": 1,
            "requests_completed": 1,
            "requests_completed_overdue": 0,
            "certificates_issued": 0,
        }
    )
    assert "Requests received 1" in pdf_text(period)[0]


def test_the_report_holds_the_request_to_its_extended_due_date(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    h = auth(tokens["dpo"])
    body = {"subject_id": CANARY_SUBJECT, "reason": "art 17", "legal_ground": "d"}
    rid = app_client.post("/v1/requests", json=body, headers=h).json()["id"]
    extended = app_client.post(
        f"/v1/requests/{rid}/extend", json={"months": 2, "reason": "many requests"}, headers=h
    ).json()
    summary = app_client.get(f"/v1/requests/{rid}/report", headers=h).json()["summary"]
    assert summary["legal_ground"] == "d"
    assert datetime.fromisoformat(summary["due_at"]) == datetime.fromisoformat(extended["due_at"])
    assert [x["months"] for x in summary["extensions"]] == [2]
    r = app_client.get(f"/v1/requests/{rid}/report", params={"format": "pdf"}, headers=h)
    text, _ = pdf_text(r.content)
    assert "processed unlawfully" in text and "+2 month(s)" in text and "days left" in text
    assert "Deadline met" not in text and "No certificate yet" in text


# The request PDF for every status a request can be in: the deadline said by status (open: days
# left, or overdue; completed or failed: met or missed; rejected or cancelled: answered on a
# date), what it says about certificates by status (none yet, none because rejected, the no-data
# certificate), the console's own day count, and no engine-room words outside "Details for
# engineers".

NOW = datetime.now(UTC)
RECEIVED = NOW - timedelta(days=3, hours=5)
DUE = RECEIVED + timedelta(days=30)
EXACT = {
    "kind": "exact_retrain",
    "model": "credit-risk",
    "records_erased": {"train": 3, "holdout": 0},
    "version_before": 1,
    "version_after": 2,
    "determinism_check": "bit_exact",
    "shards_retrained": [{"shard": 2, "first_affected_slice": 1, "slices_total": 4}],
    "physical_deletion": {"method": "vacuum", "backup_retention_days": 35},
}
NO_DATA = {
    "kind": "no_data_held",
    "model": "credit-risk",
    "records_searched": {"train": 480, "holdout": 89},
    "records_found": 0,
    "plain_words": "lethe looked for this person in credit-risk: it searched all 569 record(s) "
    "the model was trained or evaluated on and none of them belongs to this person.",
}


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _status_report(
    status: str, closed: datetime | None, overdue: bool, certs: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    events = [
        {
            "seq": 40,
            "occurred_at": _iso(RECEIVED),
            "actor": "dpo:user-1234abcd",
            "action": "request.received",
            "details": {"legal_ground": "b", "due_at": _iso(DUE)},
        }
    ]
    if closed is not None:
        action = {"completed": "request.completed", "failed": "request.failed"}.get(
            status, f"request.{status}"
        )
        details = {
            "overdue": overdue,
            **({"outcome": extra["outcome"]} if "outcome" in extra else {}),
        }
        events.append(
            {
                "seq": 47,
                "occurred_at": _iso(closed),
                "actor": "worker",
                "action": action,
                "details": details,
            }
        )
    summary = {
        "status": status,
        "subject_ref": "sub_abc",
        "received_at": _iso(RECEIVED),
        "due_at": _iso(DUE),
        "overdue": overdue,
        "legal_ground": "b",
        "certificates": certs,
        "current_certificates": certs,
        **extra,
    }
    if closed is not None:
        summary["closed_at"] = _iso(closed)
    if status == "completed" and closed is not None:
        summary["completed_at"] = _iso(closed)
    return {
        "request_id": "00000000-0000-0000-0000-000000000042",
        "reference": "LR-2026-00042",
        "ticket_ref": "HD-1881",
        "summary": summary,
        "events": events,
        "notes": [
            {
                "kind": "approval_note",
                "label": "Approval note",
                "text": "checked with legal",
                "audit_seq": 40,
                "matches_log": True,
            }
        ],
        "actors": {"dpo:user-1234abcd": "Dana (data-protection officer)"},
        "chain": {"ok": True, "events_checked": 47, "last_seq": 47, "last_hash": "f" * 64},
    }


ANSWERED = RECEIVED + timedelta(days=2)
LATE = DUE + timedelta(days=4)
CASES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    # name: (report, must appear, must not appear)
    "received": (
        _status_report("received", None, False, []),
        [
            f"Open: {days_left(DUE)} days left",
            "No certificate yet: the request has not been decided",
        ],
        ["Deadline met", "Deadline missed"],
    ),
    "approved": (
        _status_report("approved", None, False, []),
        ["Open:", "No certificate yet: the work is about to start"],
        ["Deadline met"],
    ),
    "in_progress": (
        _status_report("in_progress", None, False, []),
        ["Open:", "No certificate yet: each model's certificate is issued as it finishes"],
        ["Deadline met"],
    ),
    "in_progress_overdue": (
        _status_report("in_progress", None, True, []),
        ["Open and overdue: the deadline was"],
        ["Deadline met", "days left"],
    ),
    "completed": (
        _status_report("completed", ANSWERED, False, [EXACT], outcome="erased"),
        [
            "Deadline met: answered on",
            "completed: erased",
            "the part of the model that saw this person's data was retrained",
            "An independent retraining matched it exactly",
            "The database space was cleared",
        ],
        ["No certificate", "Deadline missed"],
    ),
    "completed_late": (
        _status_report("completed", LATE, True, [EXACT], outcome="erased"),
        ["Deadline missed: answered on"],
        ["Deadline met"],
    ),
    "no_data_held": (
        _status_report("completed", ANSWERED, False, [NO_DATA], outcome="no_data_held"),
        ["completed: no personal data held", "lethe looked for this person in credit-risk"],
        ["erased", "retrained"],
    ),
    "failed": (
        _status_report("failed", ANSWERED, False, []),
        ["No certificate: the work failed"],
        ["Deadline met"],
    ),
    "rejected": (
        _status_report("rejected", ANSWERED, False, []),
        [
            "Answered on",
            "(rejected), within the deadline",
            "No certificate: the request was rejected",
        ],
        ["Deadline met", "Deadline missed"],
    ),
    "cancelled": (
        _status_report("cancelled", ANSWERED, False, []),
        ["(cancelled)", "No certificate: the request was cancelled"],
        ["Deadline met"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_pdf_says_what_fits_the_status(case: str) -> None:
    report, present, absent = CASES[case]
    text, _ = pdf_text(request_pdf(report))
    plain = text.split("Details for engineers", 1)[0]
    for words in present:
        assert words in plain, words
    for words in absent:
        assert words not in plain, words
    for word in JARGON:
        assert word not in plain.lower(), word
    for always in ("LR-2026-00042", "HD-1881", "checked with legal", "Dana (data-protection"):
        assert always in text, always


def test_one_rendered_page_and_the_console_count(tmp_path: Path) -> None:
    report = CASES["received"][0]
    data = request_pdf(report)
    png = render_first_page(data, tmp_path)
    assert png.stat().st_size > 2000
    (artifacts_dir() / "pdf-received.png").write_bytes(png.read_bytes())
    (artifacts_dir() / "pdf-completed.pdf").write_bytes(request_pdf(CASES["completed"][0]))
    # The console's badge text is the same function's: the same number of days.
    console = deadline("received", DUE, None, False).text
    assert console in pdf_text(data)[0]
