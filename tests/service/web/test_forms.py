"""The console's forms: CSRF first, then bounded fields; errors and the subject look-up never echo
the identifier."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.support.console import (
    file_form,
    form_token,
    request_count,
    sign_in,
)
from tests.support.sample_data import CANARY_SUBJECT


def test_missing_or_wrong_csrf_is_refused(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    before = request_count(session)
    data = file_form(web)
    for token in (None, "forged"):
        sent = {k: v for k, v in data.items() if k != "csrf_token"}
        if token:
            sent["csrf_token"] = token
        r = web.post("/console/requests", data=sent)
        assert r.status_code == 403 and "csrf_rejected" in r.text
    assert request_count(session) == before


def test_validation_and_lookup_never_echo_the_identifier(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    before = request_count(session)
    bad = web.post("/console/requests", data=file_form(web, legal_ground="z"))
    assert bad.status_code == 422 and "Legal ground" in bad.text
    assert CANARY_SUBJECT not in bad.text and request_count(session) == before
    web.post("/console/requests", data=file_form(web), follow_redirects=False)
    token = form_token(web)
    found = web.post("/console/lookup", data={"csrf_token": token, "identifier": CANARY_SUBJECT})
    assert found.status_code == 200 and "1 request(s)" in found.text
    assert CANARY_SUBJECT not in found.text
