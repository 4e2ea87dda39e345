"""The console in a real browser (Playwright + Debian's chromium): a DPO carries a request
from filing to the PDF report; roles and CSRF hold; the identifier never leaks; every page is
screenshotted at 1280 and 390 px and checked with axe-core (no serious/critical violations)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import select

from service.core.config import Settings, get_settings
from service.core.security import subject_ref
from service.db.tables import TrainingRecord
from service.queue.names import TASK_PROCESS_REQUEST, TASK_RETRAIN_SHARD, TASK_TRAIN_MODEL
from tests.support.console import PASSWORD, ROLES
from tests.support.db import fresh_database
from tests.support.live import CHROMIUM_ARGS, Live, artifacts_dir, chromium_or_skip, live_lethe
from tests.support.pdf_tools import pdf_text as read_pdf
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv

NAME = MODEL_BODY["name"]
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def live(
    settings: Settings, pg_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    with (
        fresh_database(pg_server, prefix="lethe_web") as url,
        pytest.MonkeyPatch.context() as mp,
        live_lethe(settings, url, mp) as running,
    ):
        # Its own checkpoint store: content-addressed checkpoints must not leak across suites.
        mp.setattr(get_settings(), "artifact_url", str(tmp_path_factory.mktemp("web-artifacts")))
        _seed(running)
        yield running


def _seed(live: Live) -> None:
    """Accounts for every role, and a trained model, through the service's own functions."""
    from service.api.tokens import create_token
    from service.web.accounts import create_user

    with live.factory() as s, s.begin():
        for role in ROLES:
            create_user(s, f"{role}@example.test", role, PASSWORD, actor="test")
        token = create_token(s, "web-ml", "ml_engineer", actor="test")
    h = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=live.url, headers=h, timeout=60) as api:
        assert api.post("/v1/models", json=MODEL_BODY).status_code == 201
        files = {"file": ("d.csv", synthetic_csv(), "text/csv")}
        assert api.post(f"/v1/models/{NAME}/records", files=files).status_code == 201
        assert api.post(f"/v1/models/{NAME}/train").status_code in (200, 201, 202)
    assert live.drain() == [(TASK_TRAIN_MODEL, "done")]


def _train_subject(live: Live) -> str:
    settings = get_settings()
    with live.factory() as s:
        for i in range(80):
            subject = f"S-{i:04d}"
            ref = subject_ref(settings, subject)
            found = s.scalar(
                select(TrainingRecord.id).where(
                    TrainingRecord.subject_ref == ref, TrainingRecord.split == "train"
                )
            )
            if found is not None:
                return subject
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
        self.axe: dict[str, list[dict[str, Any]]] = {}
        self.page.on("request", lambda r: self.urls.append(r.url))

    def go(self, path: str) -> None:
        self.page.goto(self.live.url + path)
        self.keep()

    def keep(self) -> None:
        self.page.wait_for_load_state("load")
        self.sources.append(self.page.content())

    def sign_in(self, role: str) -> None:
        self.go("/console/signin")
        self.page.get_by_label("E-mail address").fill(f"{role}@example.test")
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.keep()

    def shoot(self, name: str) -> None:
        """Screenshots at 1280 and 390 px, and axe-core's serious/critical violations."""
        out = artifacts_dir()
        for width in WIDTHS:
            self.page.set_viewport_size({"width": width, "height": 900})
            self.page.screenshot(path=str(out / f"{name}-{width}.png"), full_page=True)
        self.page.set_viewport_size({"width": 1280, "height": 900})
        results = Axe().run(self.page)
        bad = [
            {"id": v["id"], "impact": v["impact"], "nodes": len(v["nodes"])}
            for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        self.axe[name] = bad
        (out / f"{name}-axe.json").write_text(json.dumps(results.response["violations"], indent=1))

    def close(self) -> None:
        self.context.close()


def test_dpo_carries_a_request_from_filing_to_the_pdf(browser: Browser, live: Live) -> None:
    subject = _train_subject(live)
    v = Visit(browser, live)
    v.sign_in("dpo")
    v.shoot("requests")
    v.page.get_by_role("link", name="File a request").click()
    v.keep()
    v.shoot("file")
    p = v.page
    p.get_by_label("Identifier used in the models' data").fill(subject)
    p.get_by_label("Other names of the subject").fill("Canary Person")
    p.get_by_label("Only the models chosen below").check()
    p.get_by_label(NAME).check()
    p.get_by_label("Ground").select_option("b")
    p.get_by_role("button", name="File the request").click()
    v.keep()
    assert "Done: filed" in p.content()
    p.get_by_label("Reference of the check").fill("case 2026-114")
    p.get_by_role("button", name="Record verification").click()
    v.keep()
    p.get_by_role("button", name="Approve and start").click()
    v.keep()
    assert p.locator("#status").get_attribute("data-status") == "approved"
    request_url = p.url.split("?")[0]
    ran = live.drain()
    assert ran == [(TASK_PROCESS_REQUEST, "planned"), (TASK_RETRAIN_SHARD, "done")]
    # The page polls its progress and reloads itself when the status changes.
    p.wait_for_selector('#status[data-status="completed"]', timeout=20_000)
    v.keep()
    v.shoot("request")
    assert "Done:" not in p.content()  # reloaded by the progress poll, without the notice
    timeline = p.locator(".timeline").inner_text()
    assert f"of {NAME} retrained from slice" in timeline and "bit for bit" in timeline

    with p.expect_download() as download:
        p.get_by_role("link", name="PDF report").click()
    pdf = Path(download.value.path()).read_bytes()
    pdf_text, _ = read_pdf(pdf)
    rid = request_url.rsplit("/", 1)[-1]
    for fact in (rid, "Deadline met", "bit_exact", "The hash chain verifies", "consent withdrawn"):
        assert fact in pdf_text, fact
    assert subject not in pdf_text

    p.get_by_role("link", name="Audit").click()
    v.keep()
    p.get_by_role("button", name="Verify the chain").click()
    v.keep()
    assert "The chain verifies" in p.content()
    v.shoot("audit")
    v.go("/console/models")
    v.shoot("models")

    # Look-up by identifier: sent by POST, hashed on the server, shown only as its hash.
    v.go("/console/")
    p.get_by_label("Identifier (e-mail, customer id, …)").fill(subject)
    p.get_by_role("button", name="Look up").click()
    v.keep()
    assert "1 request(s)" in p.content()
    v.shoot("lookup")

    for leak in (subject, CANARY_SUBJECT):
        assert not any(leak in u for u in v.urls), "identifier in a URL"
        assert not any(leak in s for s in v.sources), "identifier in a page"
        assert leak not in live.log.getvalue(), "identifier in the server log"
    assert "GET /console/" in live.log.getvalue()  # the log was captured at all
    assert v.axe and all(not bad for bad in v.axe.values()), v.axe
    v.close()


def test_auditor_sees_but_cannot_approve(browser: Browser, live: Live) -> None:
    dpo = Visit(browser, live)
    dpo.sign_in("dpo")
    dpo.go("/console/requests/new")
    p = dpo.page
    p.get_by_label("Identifier used in the models' data").fill("someone-else@example.org")
    p.get_by_label("Ground").select_option("a")
    p.get_by_label("Method (leave empty to verify later)").select_option("id_document")
    p.get_by_label("Reference of the check").fill("case 9")
    p.get_by_role("button", name="File the request").click()
    dpo.keep()
    dpo.shoot("request-received")
    path = p.url.split(live.url, 1)[1].split("?")[0]
    assert all(not bad for bad in dpo.axe.values()), dpo.axe
    dpo.close()

    v = Visit(browser, live)
    v.sign_in("auditor")
    v.go(path)
    assert v.page.get_by_role("button", name="Approve and start").count() == 0
    v.shoot("request-auditor")
    token = v.page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = v.page.request.post(f"{live.url}{path}/approve", form={"csrf_token": token or ""})
    assert r.status == 403
    assert all(not bad for bad in v.axe.values()), v.axe
    v.close()


def test_dpo_cannot_reach_admin_pages_and_csrf_is_required(browser: Browser, live: Live) -> None:
    v = Visit(browser, live)
    v.sign_in("dpo")
    response = v.page.goto(f"{live.url}/console/users")
    assert response is not None and response.status == 403
    v.keep()
    v.shoot("forbidden")
    r = v.page.request.post(f"{live.url}/console/requests", form={"subject_id": "x"})
    assert r.status == 403 and "csrf_rejected" in r.text()
    v.close()
    admin = Visit(browser, live)
    admin.sign_in("admin")
    admin.go("/console/users")
    admin.shoot("users")
    admin.close()
    out = Visit(browser, live)
    out.go("/console/signin")
    out.shoot("signin")
    assert all(not bad for visit in (v, admin, out) for bad in visit.axe.values())
    out.close()
