"""The console over HTTP: sessions, CSRF, roles, filing, decisions; no identifier echoed."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db.tables import AuditEvent, ConsoleSession, ErasureRequest
from tests.conftest import SentTasks
from tests.sample_data import CANARY_SUBJECT
from tests.web.conftest import PASSWORD, csrf_of, form_token, sign_in


def _count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ErasureRequest)) or 0


def file_form(client: TestClient, **extra: str) -> dict[str, str]:
    page = client.get("/console/requests/new")
    assert page.status_code == 200
    key = re.search(r'name="form_key" value="([^"]+)"', page.text)
    assert key
    return {
        "csrf_token": csrf_of(page.text),
        "form_key": key.group(1),
        "subject_id": CANARY_SUBJECT,
        "legal_ground": "b",
        "scope_kind": "all",
        **extra,
    }


def test_signin_sets_a_strict_httponly_secure_cookie(
    web: TestClient, accounts: dict[str, str]
) -> None:
    assert web.get("/console/", follow_redirects=False).headers["location"] == "/console/signin"
    page = web.get("/console/signin")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    r = web.post(
        "/console/signin",
        data={"email": accounts["dpo"], "password": PASSWORD, "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    cookie = r.headers["set-cookie"].lower()
    assert "lethe_session=" in cookie and "httponly" in cookie
    assert "samesite=strict" in cookie and "secure" in cookie
    assert web.get("/console/").status_code == 200


def test_wrong_password_and_signin_without_csrf(web: TestClient, accounts: dict[str, str]) -> None:
    page = web.get("/console/signin")
    bad = web.post(
        "/console/signin",
        data={"email": accounts["dpo"], "password": "nope", "csrf_token": csrf_of(page.text)},
    )
    assert bad.status_code == 401 and "not right" in bad.text
    no_token = web.post("/console/signin", data={"email": accounts["dpo"], "password": PASSWORD})
    assert no_token.status_code == 403 and "csrf_rejected" in no_token.text


def test_signout_and_idle_timeout(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["auditor"])
    token = form_token(web)
    r = web.post("/console/signout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert web.get("/console/", follow_redirects=False).status_code == 303
    sign_in(web, accounts["auditor"])
    session.execute(
        update(ConsoleSession).values(last_seen_at=ConsoleSession.last_seen_at - timedelta(hours=2))
    )
    session.commit()
    assert web.get("/console/", follow_redirects=False).headers["location"] == "/console/signin"


def test_missing_or_wrong_csrf_is_refused(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    before = _count(session)
    data = file_form(web)
    for token in (None, "forged"):
        sent = {k: v for k, v in data.items() if k != "csrf_token"}
        if token:
            sent["csrf_token"] = token
        r = web.post("/console/requests", data=sent)
        assert r.status_code == 403 and "csrf_rejected" in r.text
    assert _count(session) == before


def test_file_verify_approve_and_double_submit(
    web: TestClient, accounts: dict[str, str], session: Session, sent_tasks: SentTasks
) -> None:
    sign_in(web, accounts["dpo"])
    before = _count(session)
    data = file_form(web)
    first = web.post("/console/requests", data=data, follow_redirects=False)
    second = web.post("/console/requests", data=data, follow_redirects=False)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert _count(session) == before + 1
    page = web.get(first.headers["location"])
    assert CANARY_SUBJECT not in page.text and "not verified yet" in page.text
    rid = first.headers["location"].split("/")[-1].split("?")[0]
    token = csrf_of(page.text)
    refused = web.post(f"/console/requests/{rid}/approve", data={"csrf_token": token})
    assert refused.status_code == 409 and "identity_not_verified" in refused.text
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
    rejected = web.post(
        f"/console/requests/{rid}/reject", data={"csrf_token": token, "code": "legal_claims"}
    )
    assert "legal claims" in rejected.text
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


def test_validation_and_lookup_never_echo_the_identifier(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    before = _count(session)
    bad = web.post("/console/requests", data=file_form(web, legal_ground="z"))
    assert bad.status_code == 422 and "Legal ground" in bad.text
    assert CANARY_SUBJECT not in bad.text and _count(session) == before
    web.post("/console/requests", data=file_form(web), follow_redirects=False)
    token = form_token(web)
    found = web.post("/console/lookup", data={"csrf_token": token, "identifier": CANARY_SUBJECT})
    assert found.status_code == 200 and "1 request(s)" in found.text
    assert CANARY_SUBJECT not in found.text


def test_first_admin_invite_is_one_time(web: TestClient, session: Session) -> None:
    from service.web.accounts import first_admin_invite

    token = first_admin_invite(session)
    session.commit()
    assert token is not None
    page = web.get(f"/console/setup/{token}")
    data = {"email": "first@example.test", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    r = web.post(f"/console/setup/{token}", data=data, follow_redirects=False)
    assert r.status_code == 303 and web.get("/console/users").status_code == 200
    assert web.get(f"/console/setup/{token}").status_code == 404
    assert first_admin_invite(session) is None


def test_api_records_ground_verification_code_and_extension(
    web: TestClient, tokens: dict[str, str]
) -> None:
    h = {"authorization": f"Bearer {tokens['dpo']}"}
    body = {
        "subject_id": CANARY_SUBJECT,
        "reason": "Art. 17",
        "legal_ground": "c",
        "identity_verification": {"method": "account_login", "reference": "session 5"},
    }
    filed = web.post("/v1/requests", json=body, headers=h).json()
    assert filed["legal_ground"] == "c" and filed["identity_verified_at"] is not None
    rid = filed["id"]
    ext = web.post(f"/v1/requests/{rid}/extend", json={"months": 1, "reason": "complex"}, headers=h)
    assert ext.status_code == 200 and ext.json()["extended_months"] == 1
    too_long = web.post(
        f"/v1/requests/{rid}/extend", json={"months": 2, "reason": "more"}, headers=h
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "extension_too_long"
    rej = web.post(
        f"/v1/requests/{rid}/reject", json={"reason": "x", "code": "legal_claims"}, headers=h
    )
    assert rej.json()["rejection_code"] == "legal_claims"
    report = web.get(f"/v1/requests/{rid}/report", headers=h).json()
    actions = [e["action"] for e in report["events"]]
    assert actions == [
        "request.received",
        "request.identity_verified",
        "request.deadline_extended",
        "request.rejected",
    ]


def test_period_export_from_the_console(web: TestClient, accounts: dict[str, str]) -> None:
    sign_in(web, accounts["auditor"])
    pdf = web.get("/console/audit/export", params={"format": "pdf", "since": "2020-01-01"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    csv = web.get("/console/audit/export", params={"format": "csv", "until": "2999-01-01"})
    assert csv.status_code == 200 and csv.text.startswith("seq,occurred_at")
    token = form_token(web, "/console/audit")
    verified = web.post("/console/audit/verify", data={"csrf_token": token})
    assert "The chain verifies" in verified.text
    web.cookies.clear()
    sign_in(web, accounts["ml_engineer"])
    assert web.get("/console/audit/export").status_code == 403


def test_progress_polling_does_not_keep_a_session_alive(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    r = web.post("/console/requests", data=file_form(web), follow_redirects=False)
    rid = r.headers["location"].split("/")[-1].split("?")[0]
    session.execute(
        update(ConsoleSession).values(
            last_seen_at=ConsoleSession.last_seen_at - timedelta(minutes=25)
        )
    )
    session.commit()
    before = session.scalars(select(ConsoleSession.last_seen_at)).all()
    polled = web.get(f"/console/requests/{rid}/progress")
    assert polled.status_code == 200 and polled.json()["status"] == "received"
    session.expire_all()
    assert session.scalars(select(ConsoleSession.last_seen_at)).all() == before
    web.get("/console/")
    session.expire_all()
    assert session.scalars(select(ConsoleSession.last_seen_at)).all() != before
