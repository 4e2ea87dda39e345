"""The console's audit and models pages: the period export and chain verification, and a rule set's
calibration in plain words."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.db.tables import RuleSetVersion
from service.web.routes_admin import calibration_words
from tests.support.console import (
    form_token,
    sign_in,
)


def test_period_export_from_the_console(web: TestClient, accounts: dict[str, str]) -> None:
    sign_in(web, accounts["auditor"])
    pdf = web.get("/console/audit/export", params={"format": "pdf", "since": "2020-01-01"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    csv = web.get("/console/audit/export", params={"format": "csv", "until": "2999-01-01"})
    assert csv.status_code == 200 and csv.text.startswith("seq,occurred_at")
    token = form_token(web, "/console/audit")
    verified = web.post("/console/audit/verify", data={"csrf_token": token})
    assert "The audit log verifies" in verified.text
    web.cookies.clear()
    sign_in(web, accounts["ml_engineer"])
    assert web.get("/console/audit/export").status_code == 403


def test_calibration_in_plain_words() -> None:
    row = RuleSetVersion(
        version=4,
        rule_count=12,
        request_ids=["a", "b"],
        calibration={
            "threshold": {"alpha": 0.1, "delta": 0.05, "n": 59},
            "threshold_certified": True,
            "serving_threshold": 0.41,
            "serving_budget": 2,
            "false_flag_rate": 0.03,
        },
    )
    words = calibration_words(row)
    assert "against 12 rule(s) for 2 request(s)" in words
    assert "At most 10 % of leaking answers can get past, with 95 % confidence" in words
    row.calibration = {**row.calibration, "threshold_certified": False}
    assert "No guarantee could be certified" in calibration_words(row)
