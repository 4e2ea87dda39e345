"""The console in a real browser (Playwright + Debian's chromium), as a DPO with no engineer at
hand would use it: a request from filing to the PDF (the form kept after a validation error,
discovery counts before approval, the DPO's own words shown back, plain words); the form kept
after the session expired and on Back; the duplicate warning; the "no personal data held"
outcome; Reject's confirmation; the last-admin guard; deep links through sign-in; HTML error
pages; a long paste refused in words. Every page is screenshotted at 1280 and 390 px (and
must fit 390 px: scrollWidth ≤ 390) and checked with axe-core: no violations at all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import select, update

from service.core.config import Settings, get_settings
from service.core.security import subject_ref
from service.db.tables import ConsoleSession, TrainingRecord
from service.queue.names import TASK_PROCESS_REQUEST, TASK_RETRAIN_SHARD, TASK_TRAIN_MODEL
from tests.support.console import PASSWORD, ROLES, enrol_second_factor, fresh_code
from tests.support.db import fresh_database
from tests.support.live import CHROMIUM_ARGS, Live, artifacts_dir, chromium_or_skip, live_lethe
from tests.support.pdf_tools import pdf_text as read_pdf
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv
from tests.support.settings import set_everywhere
from workers.base import DbTask

NAME = MODEL_BODY["name"]
WIDTHS = (1280, 390)
JARGON = ("shard", "slice", "vacuum", "write-ahead", "bit_exact", "lineage", "loadable")


@pytest.fixture(scope="module")
def live(
    settings: Settings, pg_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    with (
        fresh_database(pg_server, prefix="lethe_web") as url,
        pytest.MonkeyPatch.context() as mp,
    ):
        # Its own artifact store (content-addressed checkpoints must not leak across suites) and
        # its own audit checkpoint store (one per database, as in a deployment: another
        # database's signed heads would rightly read as a rewritten history). The app's settings
        # and the tasks' (get_settings(): another object once a test rebuilt it) see the same
        # stores, or records the API sealed find no key in the tasks.
        set_everywhere(
            mp,
            settings,
            artifact_url=str(tmp_path_factory.mktemp("web-artifacts")),
            audit_checkpoint_url=str(tmp_path_factory.mktemp("web-audit-checkpoints")),
        )
        mp.setattr(DbTask, "_anchor", None)
        with live_lethe(settings, url, mp) as running:
            _seed(running)
            yield running


def _seed(live: Live) -> None:
    """Accounts for every role (the admin with an authenticator), and a trained model, through
    the service's own functions."""
    from service.api.tokens import create_token
    from service.web.accounts import create_user

    with live.factory() as s, s.begin():
        for role in ROLES:
            create_user(s, f"{role}@example.test", role, PASSWORD, "test", role.capitalize())
        enrol_second_factor(s, "admin@example.test")
        token = create_token(s, "web-ml", "ml_engineer", actor="test")
    h = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live.url, headers=h, timeout=60) as api:
        assert api.post("/v1/models", json=MODEL_BODY).status_code == 201
        files = {"file": ("d.csv", synthetic_csv(), "text/csv")}
        assert api.post(f"/v1/models/{NAME}/records", files=files).status_code == 201
        assert api.post(f"/v1/models/{NAME}/train").status_code in (200, 201, 202)
    assert live.drain() == [(TASK_TRAIN_MODEL, "done")]


def _train_subject(live: Live, skip: int = 0) -> str:
    settings = get_settings()
    found = 0
    with live.factory() as s:
        for i in range(80):
            subject = f"S-{i:04d}"
            ref = subject_ref(settings, subject)
            held = s.scalar(
                select(TrainingRecord.id).where(
                    TrainingRecord.subject_ref == ref, TrainingRecord.split == "train"
                )
            )
            if held is not None:
                if found == skip:
                    return subject
                found += 1
    raise AssertionError("no subject in the train split")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_or_skip()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Visit:
    """A page that records every URL it requested and every page source it showed."""

    def __init__(self, browser: Browser, live: Live) -> None:
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        self.page: Page = self.context.new_page()
        self.live = live
        self.urls: list[str] = []
        self.sources: list[str] = []
        self.page.on("request", lambda r: self.urls.append(r.url))

    def go(self, path: str) -> None:
        self.page.goto(self.live.url + path)
        self.keep()

    def keep(self) -> None:
        self.page.wait_for_load_state("load")
        self.sources.append(self.page.content())

    def sign_in(self, role: str, *, go: str = "/console/signin") -> None:
        self.go(go)
        self.page.get_by_label("E-mail address").fill(f"{role}@example.test")
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.keep()
        if "/console/signin/code" in self.page.url:
            self.page.get_by_label("Six-digit code").fill(fresh_code())
            self.page.get_by_role("button", name="Continue").click()
            self.keep()

    def path(self) -> str:
        return self.page.url.split(self.live.url, 1)[1]

    def close(self) -> None:
        self.context.close()


SHOTS: dict[str, dict[str, Any]] = {}


def shoot(v: Visit, name: str) -> None:
    """Screenshots at 1280 and 390 px; the page must fit 390 px; axe-core finds nothing."""
    out = artifacts_dir()
    width_at_390 = 0
    for width in WIDTHS:
        v.page.set_viewport_size({"width": width, "height": 900})
        if width == 390:
            width_at_390 = v.page.evaluate("document.documentElement.scrollWidth")
        v.page.screenshot(path=str(out / f"{name}-{width}.png"), full_page=True)
    v.page.set_viewport_size({"width": 1280, "height": 900})
    violations = Axe().run(v.page).response["violations"]
    (out / f"{name}-axe.json").write_text(json.dumps(violations, indent=1))
    SHOTS[name] = {"width_at_390": width_at_390, "axe": [x["id"] for x in violations]}
    assert width_at_390 <= 390, f"{name}: {width_at_390} px wide at 390"
    assert not violations, f"{name}: {[x['id'] for x in violations]}"


def _file(v: Visit, subject: str, *, ground: str = "b", chosen: bool = True) -> None:
    p = v.page
    p.get_by_label("Identifier used in the models' data").fill(subject)
    if chosen:
        p.get_by_label("Only the models chosen below").check()
        p.get_by_label(NAME, exact=True).check()
    p.get_by_label("Ground", exact=True).select_option(ground)
    p.get_by_role("button", name="File the request").click()
    v.keep()


def test_dpo_carries_a_request_from_filing_to_the_pdf(browser: Browser, live: Live) -> None:
    subject = _train_subject(live)
    v = Visit(browser, live)
    v.sign_in("dpo")
    shoot(v, "requests")
    v.page.get_by_role("link", name="File a request").click()
    v.keep()
    shoot(v, "file")
    p = v.page
    # A validation error (a pasted identifier too long) keeps every field as typed.
    p.get_by_label("Identifier used in the models' data").fill(subject + " " * 300 + "x")
    p.get_by_label("Other names of the subject").fill("Canary Person")
    p.get_by_label("Your ticket or case reference").fill("HD-2041")
    p.get_by_label("Notes (optional").fill("Asked by phone on Monday")
    p.get_by_label("Only the models chosen below").check()
    p.get_by_label(NAME, exact=True).check()
    p.get_by_label("Ground", exact=True).select_option("b")
    p.get_by_role("button", name="File the request").click()
    v.keep()
    assert "the most is 256" in p.locator("#form-errors").inner_text()
    assert p.get_by_label("Other names of the subject").input_value() == "Canary Person"
    assert p.get_by_label("Notes (optional").input_value() == "Asked by phone on Monday"
    assert p.get_by_label("Your ticket or case reference").input_value() == "HD-2041"
    assert p.get_by_label("Ground", exact=True).input_value() == "b"
    assert p.get_by_label(NAME, exact=True).is_checked()
    shoot(v, "file-error")
    p.get_by_label("Identifier used in the models' data").fill(subject)
    p.get_by_role("button", name="File the request").click()
    v.keep()
    assert "Done: filed" in p.content()
    reference = p.locator("h1").inner_text().rsplit(" ", 1)[-1]
    assert reference.startswith("LR-")
    # Discovery before the decision: counts per model, no content.
    assert f"{NAME}: holds " in p.locator("#findings").inner_text()
    p.get_by_label("Reference of the check (case number)").fill("case 2026-114")
    p.get_by_role("button", name="Record verification").click()
    v.keep()
    p.get_by_label("Note (optional)").fill("Checked with legal")
    p.get_by_role("button", name="Approve and start").click()
    v.keep()
    assert p.locator("#status").get_attribute("data-status") == "approved"
    ran = live.drain()
    assert ran == [(TASK_PROCESS_REQUEST, "planned"), (TASK_RETRAIN_SHARD, "done")]
    # The page polls its progress and reloads itself when the status changes.
    p.wait_for_selector('#status[data-status="completed"]', timeout=20_000)
    v.keep()
    shoot(v, "request")
    words = p.locator("#dpo-words").inner_text()
    for said in ("case 2026-114", "Checked with legal", "Asked by phone on Monday"):
        assert said in words and said in p.locator(".timeline").inner_text()
    assert "Dpo (data-protection officer)" in p.locator(".timeline").inner_text()
    shown = p.locator("main").inner_text().split("Details for engineers", 1)[0].lower()
    assert "the part of the model that saw this person's data was retrained" in shown
    assert not [w for w in JARGON if w in shown], shown

    with p.expect_download() as download:
        p.get_by_role("link", name="PDF report").click()
    pdf = Path(download.value.path()).read_bytes()
    (artifacts_dir() / "request-browser.pdf").write_bytes(pdf)
    text, _ = read_pdf(pdf)
    for fact in (reference, "HD-2041", "Deadline met", "case 2026-114", "Checked with legal"):
        assert fact in text, fact
    assert subject not in text

    v.go("/console/?q=HD-2041&status=all")
    assert reference in p.locator("#list-rows").inner_text()
    v.go(f"/console/?q={reference}&status=all")
    assert "completed: erased" in p.locator("#list-rows").inner_text()
    p.get_by_role("link", name="Audit").click()
    v.keep()
    p.get_by_role("button", name="Verify the log").click()
    v.keep()
    assert "The audit log verifies" in p.locator("#verification").inner_text()
    shoot(v, "audit")
    v.go("/console/models")
    shoot(v, "models")
    v.go("/console/account")
    shoot(v, "account")

    # Look-up by identifier: sent by POST, hashed on the server, shown only as its hash.
    v.go("/console/")
    p.get_by_label("Identifier (e-mail, customer id, …)").fill(subject)
    p.get_by_role("button", name="Look up").click()
    v.keep()
    assert "has 1 request(s)" in p.content()
    shoot(v, "lookup")
    # A 10,000-character paste is refused in words, not cut.
    p.get_by_label("Identifier (e-mail, customer id, …)").fill("x" * 10_000)
    p.get_by_role("button", name="Look up").click()
    v.keep()
    assert "10,000 characters; the most is 256" in p.locator("#lookup-error").inner_text()

    for leak in (subject, CANARY_SUBJECT):
        assert not any(leak in u for u in v.urls), "identifier in a URL"
        assert leak not in live.log.getvalue(), "identifier in the server log"
    # The identifier is shown back only in the DPO's own refused form, never elsewhere.
    assert sum(subject in s for s in v.sources) == 1
    assert "GET /console/" in live.log.getvalue()  # the log was captured at all
    v.close()


def test_the_form_survives_expiry_and_back_and_warns_of_a_duplicate(
    browser: Browser, live: Live
) -> None:
    v = Visit(browser, live)
    v.sign_in("dpo")
    v.go("/console/requests/new")
    p = v.page
    p.get_by_label("Identifier used in the models' data").fill("dup-person@example.org")
    p.get_by_label("Ground", exact=True).select_option("a")
    p.get_by_label("Notes (optional").fill("Typed before lunch")
    with live.factory() as s, s.begin():  # idle for two hours: the session has ended
        s.execute(
            update(ConsoleSession).values(
                last_seen_at=ConsoleSession.last_seen_at - timedelta(hours=2)
            )
        )
    p.get_by_role("button", name="File the request").click()
    v.keep()
    assert "/console/signin" in p.url  # the session had ended: sign in again…
    p.get_by_label("E-mail address").fill("dpo@example.test")
    p.get_by_label("Password").fill(PASSWORD)
    p.get_by_role("button", name="Sign in").click()
    v.keep()
    # …and the form is back as it was typed, not filed behind the DPO's back.
    assert "/console/requests/new?draft=" in p.url
    assert p.get_by_label("Identifier used in the models' data").input_value() == (
        "dup-person@example.org"
    )
    assert p.get_by_label("Notes (optional").input_value() == "Typed before lunch"
    assert "What you typed before was kept" in p.content()
    shoot(v, "file-restored")
    p.get_by_role("button", name="File the request").click()
    v.keep()
    first = v.path().split("?")[0]
    first_ref = p.locator("h1").inner_text().rsplit(" ", 1)[-1]
    # Back: the form as typed, and word that it was filed already (sending again files once).
    p.go_back()
    v.keep()
    assert p.get_by_label("Notes (optional").input_value() == "Typed before lunch"
    assert f"already filed as {first_ref}" in p.locator("main").inner_text()
    p.get_by_role("button", name="File the request").click()
    v.keep()
    assert v.path().split("?")[0] == first
    # A new form for the same person: a warning with a link, then filed on confirmation.
    v.go("/console/requests/new")
    p.get_by_label("Identifier used in the models' data").fill("dup-person@example.org")
    p.get_by_label("Ground", exact=True).select_option("a")
    p.get_by_role("button", name="File the request").click()
    v.keep()
    warning = p.locator("#duplicate-warning")
    assert first_ref in warning.inner_text()
    assert warning.get_by_role("link", name=first_ref).get_attribute("href") == first
    shoot(v, "file-duplicate")
    p.get_by_label("File a new request for this person anyway").check()
    p.get_by_role("button", name="File the request").click()
    v.keep()
    assert "Done: filed" in p.content() and v.path().split("?")[0] != first
    assert first_ref in p.locator(".warning").inner_text()  # "another open request"
    v.close()


def test_no_data_held_reject_confirmation_and_guards(browser: Browser, live: Live) -> None:
    v = Visit(browser, live)
    v.sign_in("dpo")
    v.go("/console/requests/new")
    p = v.page
    _file(v, "never-a-customer@example.org", ground="a")
    p.get_by_label("Reference of the check (case number)").fill("case 9")
    p.get_by_role("button", name="Record verification").click()
    v.keep()
    assert f"{NAME}: holds no record of this person" in p.locator("#findings").inner_text()
    assert "no personal data held" in p.locator("#held-nowhere").inner_text()
    shoot(v, "request-received")
    p.get_by_role("button", name="Approve and start").click()
    v.keep()
    live.drain()
    p.wait_for_selector('#status[data-status="completed"]', timeout=20_000)
    v.keep()
    assert p.locator("#status").inner_text() == "completed: no personal data held"
    assert "lethe looked for this person in" in p.locator("main").inner_text()
    shoot(v, "request-no-data")
    v.go("/console/?status=no_data_held")
    assert "completed: no personal data held" in p.locator("#list-rows").inner_text()

    # Reject: no reason chosen for the DPO, and nothing happens without the tick.
    v.go("/console/requests/new")
    _file(v, "to-reject@example.org", ground="c")
    rejecting = v.path().split("?")[0]
    assert p.get_by_label("Reason for rejecting").input_value() == ""
    p.get_by_label("Reason for rejecting").select_option("manifestly_unfounded")
    p.get_by_role("button", name="Reject the request").click()
    assert p.locator("#status").get_attribute("data-status") == "received"  # the tick is missing
    p.get_by_label("I confirm: rejecting is final").check()
    p.get_by_label("Details (needed for").fill("Fifth identical request this month")
    p.get_by_role("button", name="Reject the request").click()
    v.keep()
    assert p.locator("#status").get_attribute("data-status") == "rejected"
    assert "Fifth identical request this month" in p.locator("#dpo-words").inner_text()
    assert "Answered on" in p.locator("#deadline").inner_text()
    v.close()

    # The last admin cannot be disabled; destructive buttons look destructive.
    admin = Visit(browser, live)
    admin.sign_in("admin")
    admin.go("/console/users")
    assert "the only active admin: cannot be disabled" in admin.page.content()
    assert admin.page.get_by_role("button", name="Disable admin@example.test").count() == 0
    disable = admin.page.get_by_role("button", name="Disable dpo@example.test")
    assert "danger-link" in (disable.get_attribute("class") or "")
    shoot(admin, "users")
    admin.close()

    # A deep link survives signing in; unknown pages and bad ids are HTML pages.
    deep = Visit(browser, live)
    deep.sign_in("auditor", go=rejecting)
    assert deep.path() == rejecting
    shoot(deep, "request-auditor")
    assert deep.page.get_by_role("button", name="Approve and start").count() == 0
    for missing in ("/console/no-such-page", "/console/requests/not-an-id"):
        response = deep.page.goto(live.url + missing)
        assert response is not None and response.status == 404
        assert "There is no such page or request." in deep.page.content()
    shoot(deep, "not-found")
    deep.close()


def test_a_request_held_open_by_a_refused_deletion_says_so(
    browser: Browser, live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint store refuses to delete the superseded copies of the model: the request
    stays open, and its page says why in plain words (the error's text nowhere, its class only
    behind the engineers' disclosure); once the deletion works the request completes."""
    import workers.tasks.exact as training
    from workers.tasks.requests import process_request

    subject = _train_subject(live, skip=1)
    v = Visit(browser, live)
    v.sign_in("dpo")
    v.go("/console/requests/new")
    p = v.page
    _file(v, subject)
    p.get_by_label("Reference of the check (case number)").fill("case 77")
    p.get_by_role("button", name="Record verification").click()
    v.keep()
    p.get_by_role("button", name="Approve and start").click()
    v.keep()
    real = training.destroy_checkpoints

    def refused(*_: Any) -> None:
        raise PermissionError("bucket policy denies s3:DeleteObject on /secret/path")

    monkeypatch.setattr(training, "destroy_checkpoints", refused)
    monkeypatch.setattr(DbTask, "factory_override", live.factory)
    # One worker pass each, by hand: the retrain's next try is left in the outbox.
    name, args, _ = live.sent.sent.pop(0)
    assert name == TASK_PROCESS_REQUEST and process_request(*args) == "planned"
    name, args, _ = live.sent.sent.pop(0)
    assert name == TASK_RETRAIN_SHARD and training.retrain_shard(*args) == "requeued"
    assert [(n, delay) for n, _, delay in live.sent.sent] == [(TASK_RETRAIN_SHARD, 5)]
    v.go(v.path().split("?")[0])
    assert p.locator("#status").get_attribute("data-status") == "in_progress"
    # The work bar is full: the status beside it says what the request waits for.
    said = p.locator(f'[data-model-status="{NAME}"]').inner_text()
    assert said.startswith("waiting: deleting the model's earlier saved copies"), said
    assert "(tried 1 time(s))" in said
    timeline = p.locator(".timeline").inner_text()
    assert "did not work this time (try 1); lethe keeps trying by itself" in timeline
    shown = p.locator("main").inner_text().split("Details for engineers", 1)[0]
    assert "PermissionError" not in shown
    assert not [w for w in JARGON if w in shown.lower()], shown
    assert "secret" not in p.content() and "DeleteObject" not in p.content()
    shoot(v, "request-deletion-refused")

    monkeypatch.setattr(training, "destroy_checkpoints", real)
    assert live.drain() == [(TASK_RETRAIN_SHARD, "finished")]
    p.wait_for_selector('#status[data-status="completed"]', timeout=20_000)
    v.keep()
    assert "did not work this time (try 1)" in p.locator(".timeline").inner_text()
    v.close()


def test_signed_out_pages(browser: Browser, live: Live) -> None:
    v = Visit(browser, live)
    response = v.page.goto(live.url + "/")
    assert response is not None and response.ok and "/console/signin" in v.page.url
    shoot(v, "signin")
    icon = v.page.request.get(live.url + "/favicon.ico")
    assert icon.ok and icon.headers["content-type"].startswith("image/svg")
    v.close()
    dpo = Visit(browser, live)
    dpo.sign_in("ml_engineer")
    assert dpo.page.get_by_label("Identifier (e-mail, customer id, …)").count() == 0
    response = dpo.page.goto(live.url + "/console/users")
    assert response is not None and response.status == 403
    shoot(dpo, "forbidden")
    dpo.close()
    (artifacts_dir() / "console-pages.json").write_text(json.dumps(SHOTS, indent=1))
