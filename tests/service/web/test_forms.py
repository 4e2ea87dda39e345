"""The console's forms: CSRF first, then bounded fields; a refused form comes back as typed (to
the DPO who typed it), the subject look-up never shows the identifier."""

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
        assert r.status_code == 403 and 'data-error-code="csrf_rejected"' in r.text
    assert request_count(session) == before


def test_a_refused_form_keeps_what_was_typed_and_the_lookup_never_shows_it(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    before = request_count(session)
    typed = {"legal_ground": "z", "notes": "called on Monday", "ticket_ref": "HD-77"}
    bad = web.post("/console/requests", data=file_form(web, **typed))
    assert bad.status_code == 422 and "Legal ground" in bad.text
    assert f'value="{CANARY_SUBJECT}"' in bad.text and "called on Monday</textarea>" in bad.text
    assert 'value="HD-77"' in bad.text and request_count(session) == before
    web.post("/console/requests", data=file_form(web), follow_redirects=False)
    token = form_token(web)
    found = web.post("/console/lookup", data={"csrf_token": token, "identifier": CANARY_SUBJECT})
    assert found.status_code == 200 and "1 request(s)" in found.text
    assert CANARY_SUBJECT not in found.text


def test_a_long_paste_and_a_nul_byte_are_refused_in_words(
    web: TestClient, accounts: dict[str, str], session: Session
) -> None:
    sign_in(web, accounts["dpo"])
    before = request_count(session)
    long = web.post("/console/requests", data=file_form(web, subject_id="x" * 10_000))
    assert long.status_code == 422 and "10,000 characters; the most is 256" in long.text
    nul = web.post("/console/requests", data=file_form(web, subject_id="ab\x00cd"))
    assert nul.status_code == 422 and "control or invisible characters" in nul.text
    token = form_token(web)
    looked = web.post("/console/lookup", data={"csrf_token": token, "identifier": "y" * 10_000})
    assert looked.status_code == 422 and "10,000 characters" in looked.text
    assert request_count(session) == before
