"""The request PDF for every status a request can be in: the deadline said by status (open:
days left, or overdue; completed or failed: met or missed; rejected or cancelled: answered on a
date), what it says about certificates by status (none yet, none because rejected, the
no-data certificate), the same day count as the console, and no engine-room words outside
"Details for engineers". One page of each is rendered with pdftoppm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service.erasure.deadlines import days_left
from service.reports.pdf import request_pdf
from service.reports.plain import deadline
from tests.support.live import artifacts_dir
from tests.support.pdf_tools import pdf_text, render_first_page

NOW = datetime.now(UTC)
RECEIVED = NOW - timedelta(days=3, hours=5)
DUE = RECEIVED + timedelta(days=30)
JARGON = ("shard", "slice", "vacuum", "write-ahead", "bit_exact", "lineage", "loadable")
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


def _report(
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
        _report("received", None, False, []),
        [
            f"Open: {days_left(DUE)} days left",
            "No certificate yet: the request has not been decided",
        ],
        ["Deadline met", "Deadline missed"],
    ),
    "approved": (
        _report("approved", None, False, []),
        ["Open:", "No certificate yet: the work is about to start"],
        ["Deadline met"],
    ),
    "in_progress": (
        _report("in_progress", None, False, []),
        ["Open:", "No certificate yet: each model's certificate is issued as it finishes"],
        ["Deadline met"],
    ),
    "in_progress_overdue": (
        _report("in_progress", None, True, []),
        ["Open and overdue: the deadline was"],
        ["Deadline met", "days left"],
    ),
    "completed": (
        _report("completed", ANSWERED, False, [EXACT], outcome="erased"),
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
        _report("completed", LATE, True, [EXACT], outcome="erased"),
        ["Deadline missed: answered on"],
        ["Deadline met"],
    ),
    "no_data_held": (
        _report("completed", ANSWERED, False, [NO_DATA], outcome="no_data_held"),
        ["completed: no personal data held", "lethe looked for this person in credit-risk"],
        ["erased", "retrained"],
    ),
    "failed": (
        _report("failed", ANSWERED, False, []),
        ["No certificate: the work failed"],
        ["Deadline met"],
    ),
    "rejected": (
        _report("rejected", ANSWERED, False, []),
        [
            "Answered on",
            "(rejected), within the deadline",
            "No certificate: the request was rejected",
        ],
        ["Deadline met", "Deadline missed"],
    ),
    "cancelled": (
        _report("cancelled", ANSWERED, False, []),
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
