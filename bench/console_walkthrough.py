"""How long a new DPO needs, with the console alone, from starting lethe to a completed request
with its PDF in the browser: driven by Playwright in Debian's chromium, timed once.

``lethe serve --port P`` (what ``make serve PORT=P`` runs) on a fresh data folder (embedded
PostgreSQL and a worker), then: the first admin opens the printed link, chooses a password,
sets up the authenticator app and invites a DPO; an ML engineer registers, uploads and trains
the small sample model over the API (the console does not register models); the DPO accepts
the invitation, files a request for a person the model was trained on, records the identity
check, approves, watches the page until the request completes and downloads the PDF.

Prints one JSON object: the total, each stage's seconds, and the PDF's facts checked. No
baseline is run beside it: the console before issue 29 cannot do this flow (no invitations,
no second factor). The issue's own walkthrough of the old console took 155 s by hand.

    nice -n 10 python bench/console_walkthrough.py [--out bench/results/console_walkthrough.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
from playwright.sync_api import Page, sync_playwright
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.core.config import Settings  # noqa: E402
from service.core.security import subject_ref  # noqa: E402
from service.stack.processes import free_port  # noqa: E402
from tests.support.live import CHROMIUM_ARGS, chromium_or_skip  # noqa: E402
from tests.support.pdf_tools import pdf_text  # noqa: E402
from tests.support.sample_data import MODEL_BODY, synthetic_csv  # noqa: E402

PASSWORD = "a long and private passphrase"


def _wait_for_lines(
    proc: subprocess.Popen[str], wanted: tuple[str, ...], timeout: float
) -> dict[str, str]:
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline and len(found) < len(wanted):
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("lethe serve stopped")
        for prefix in wanted:
            if line.startswith(prefix):
                found[prefix] = line[len(prefix) :].strip()
    return found


def _healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("lethe did not become healthy")


def _first_admin(page: Page, link: str) -> str:
    page.goto(link)
    page.get_by_label("E-mail address").fill("admin@example.org")
    page.get_by_label("Your name").fill("Alex Admin")
    page.get_by_label("Password (at least 12").fill(PASSWORD)
    page.get_by_label("The same password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account and sign in").click()
    secret = page.locator("#totp-secret").inner_text()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn it on").click()
    page.get_by_role("link", name="Continue to the console").click()
    page.get_by_role("link", name="Accounts").click()
    page.get_by_label("E-mail address").fill("dpo@example.org")
    page.get_by_label("Name, as colleagues").fill("Dana DPO")
    page.get_by_label("Role").select_option("dpo")
    page.get_by_role("button", name="Create the invitation").click()
    invite = re.search(
        r"https?://\S+/console/invite/[A-Za-z0-9_-]+", page.locator("#invite-link").inner_text()
    )
    assert invite
    return invite.group(0)


def _model(url: str, database_url: str, env: dict[str, str]) -> str:
    """The ML engineer's part, over the API; returns a person the model was trained on."""
    token = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "token",
                "create",
                "bench-ml",
                "--role",
                "ml_engineer",
            ],
            env={**env, "LETHE_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with httpx.Client(
        base_url=url, headers={"authorization": f"Bearer {token}"}, timeout=60
    ) as api:
        api.post("/v1/models", json=MODEL_BODY).raise_for_status()
        files = {"file": ("d.csv", synthetic_csv(), "text/csv")}
        api.post(f"/v1/models/{MODEL_BODY['name']}/records", files=files).raise_for_status()
        api.post(f"/v1/models/{MODEL_BODY['name']}/train").raise_for_status()
        while api.get(f"/v1/models/{MODEL_BODY['name']}").json()["status"] != "ready":
            time.sleep(0.5)
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    settings = Settings(database_url=database_url)
    with engine.connect() as conn:
        for i in range(80):
            subject = f"S-{i:04d}"
            held = conn.execute(
                text("SELECT 1 FROM training_records WHERE subject_ref = :r AND split = 'train'"),
                {"r": subject_ref(settings, subject)},
            ).first()
            if held:
                engine.dispose()
                return subject
    raise RuntimeError("no trained subject")


def _dpo(page: Page, invite: str, subject: str) -> bytes:
    page.goto(invite)
    page.get_by_label("Password (at least 12").fill(PASSWORD)
    page.get_by_label("The same password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account and sign in").click()
    page.get_by_role("link", name="File a request").click()
    page.get_by_label("Identifier used in the models' data").fill(subject)
    page.get_by_label("Ground", exact=True).select_option("b")
    page.get_by_label("Method (leave empty").select_option("id_document")
    page.get_by_label("Reference of the check").fill("case 1")
    page.get_by_role("button", name="File the request").click()
    page.get_by_role("button", name="Approve and start").click()
    page.wait_for_selector('#status[data-status="completed"]', timeout=600_000)
    with page.expect_download() as download:
        page.get_by_role("link", name="PDF report").click()
    return Path(download.value.path()).read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/console_walkthrough.json")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="lethe-walkthrough-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env |= {"LETHE_DATA_DIR": str(data), "LETHE_ENVIRONMENT": "development"}
    stages: dict[str, float] = {}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _wait_for_lines(proc, ("embedded PostgreSQL: ", "first admin: open "), 300)
        # Keep reading what the server prints, or its pipe fills and it blocks.
        assert proc.stdout is not None
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        link = lines["first admin: open "].split(" ")[0]
        _healthy(url, 120)
        stages["serve_until_ready"] = time.monotonic() - start
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_or_skip(), args=CHROMIUM_ARGS)
            admin = browser.new_context().new_page()
            invite = _first_admin(admin, link)
            stages["first_admin_and_invite"] = time.monotonic() - start - sum(stages.values())
            subject = _model(url, lines["embedded PostgreSQL: "], env)
            stages["model_trained_over_api"] = time.monotonic() - start - sum(stages.values())
            dpo = browser.new_context(accept_downloads=True).new_page()
            pdf = _dpo(dpo, invite, subject)
            stages["dpo_files_to_pdf"] = time.monotonic() - start - sum(stages.values())
            browser.close()
        total = time.monotonic() - start
        words, pages = pdf_text(pdf)
        facts = {
            "deadline_met": "Deadline met" in words,
            "plain_words": "the part of the model that saw this person's data was retrained"
            in words,
            "identifier_absent": subject not in words,
            "pages": pages,
        }
        result: dict[str, Any] = {
            "bench": "console_walkthrough",
            "seconds_total": round(total, 1),
            "stages_seconds": {k: round(v, 1) for k, v in stages.items()},
            "pdf": facts,
            "baseline": "none run: the console before issue 29 has no invitations or second "
            "factor; the issue's manual walkthrough of it took 155 s",
        }
        print(json.dumps(result, indent=1))
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
