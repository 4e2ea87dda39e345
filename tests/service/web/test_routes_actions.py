"""A request's actions in the console: file, verify identity, approve (a double submit files once),
reject with a code, extend the deadline, each with the API's roles."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import AuditEvent, ErasureRequest
from tests.support.api import SentTasks
from tests.support.console import (
    csrf_of,
    file_form,
    form_token,
    request_count,
    sign_in,
)
from tests.support.sample_data import CANARY_SUBJECT


def test_file_verify_approve_and_double_submit(
    web: TestClient, accounts: dict[str, str], session: Session, sent_tasks: SentTasks
) -> None:
    sign_in(web, accounts["dpo"])
    before = request_count(session)
    data = file_form(web)
    first = web.post("/console/requests", data=data, follow_redirects=False)
    second = web.post("/console/requests", data=data, follow_redirects=False)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert request_count(session) == before + 1
    page = web.get(first.headers["location"])
    assert CANARY_SUBJECT not in page.text and "not verified yet" in page.text
    rid = first.headers["location"].split("/")[-1].split("?")[0]
    token = csrf_of(page.text)
    refused = web.post(f"/console/requests/{rid}/approve", data={"csrf_token": token})
    assert refused.status_code == 409 and 'data-error-code="identity_not_verified"' in refused.text
    assert sent_tasks.sent == []
    verified = web.post(
        f"/console/requests/{rid}/verify",
        data={"csrf_token": token, "method": "id_document", "reference": "case 77"},
    )
    assert verified.status_code == 200 and "Identity document checked" in verified.text
    ok = web.post(f"/console/requests/{rid}/approve", data={"csrf_token": token})
    assert ok.status_code == 200 and "approved" in ok.text
    assert len(sent_tasks.sent) == 1
    actions = session.scalars(
        select(AuditEvent.action).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
    ).all()
    assert actions == ["request.received", "request.identity_verified", "request.approved"]


def test_reject_with_code_and_extend_deadline(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    r = web.post("/console/requests", data=file_form(web), follow_redirects=False)
    rid = r.headers["location"].split("/")[-1].split("?")[0]
    token = form_token(web, f"/console/requests/{rid}")
    due = session.scalar(select(ErasureRequest.due_at).where(ErasureRequest.id == rid))
    assert due is not None
    extend = {"csrf_token": token, "months": "2", "reason": "complex"}
    assert "extended by 2 month" in web.post(f"/console/requests/{rid}/extend", data=extend).text
    again = web.post(f"/console/requests/{rid}/extend", data={**extend, "months": "1"})
    assert again.status_code == 422 and "extension_too_long" in again.text
    session.expire_all()
    new_due = session.scalar(select(ErasureRequest.due_at).where(ErasureRequest.id == rid))
    assert new_due is not None and 59 <= (new_due - due).days <= 62
    unconfirmed = web.post(f"/console/requests/{rid}/reject", data={"csrf_token": token})
    assert unconfirmed.status_code == 422 and "unknown_rejection_reason" in unconfirmed.text
    no_tick = web.post(
        f"/console/requests/{rid}/reject", data={"csrf_token": token, "code": "legal_claims"}
    )
    assert no_tick.status_code == 422 and "confirmation_required" in no_tick.text
    rejected = web.post(
        f"/console/requests/{rid}/reject",
        data={
            "csrf_token": token,
            "code": "legal_claims",
            "reason": "court case 4 O 12/26",
            "confirm": "yes",
        },
    )
    assert "legal claims" in rejected.text and "court case 4 O 12/26" in rejected.text
    event = session.scalar(
        select(AuditEvent).where(
            AuditEvent.request_id == rid, AuditEvent.action == "request.rejected"
        )
    )
    assert event is not None and event.details["reason_code"] == "legal_claims"


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        ("auditor", "post", "/console/requests/{rid}/approve", 403),
        ("ml_engineer", "post", "/console/requests", 403),
        ("ml_engineer", "get", "/console/audit", 403),
        ("dpo", "get", "/console/users", 403),
        ("auditor", "get", "/console/requests/{rid}", 200),
        ("admin", "get", "/console/users", 200),
        # The look-up would tell an ML engineer or an auditor whether a person asked.
        ("ml_engineer", "post", "/console/lookup", 403),
        ("auditor", "post", "/console/lookup", 403),
    ],
)
def test_roles_match_the_api(
    web: TestClient,
    accounts: dict[str, str],
    role: str,
    method: str,
    path: str,
    status: int,
) -> None:
    sign_in(web, accounts["dpo"])
    r = web.post("/console/requests", data=file_form(web), follow_redirects=False)
    rid = r.headers["location"].split("/")[-1].split("?")[0]
    web.cookies.clear()
    sign_in(web, accounts[role])
    token = form_token(web)
    url = path.format(rid=rid)
    got = web.get(url) if method == "get" else web.post(url, data={"csrf_token": token})
    assert got.status_code == status
