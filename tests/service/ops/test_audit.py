"""``lethe requests export`` and ``lethe audit export`` write a request's and a period's report
(CSV, PDF, JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.api import cli_json


def test_export_writes_the_report(run: Any, tokens: dict[str, str], tmp_path: Path) -> None:
    filed = cli_json(
        run(
            tokens["dpo"],
            "requests",
            "file",
            "--subject-file",
            "-",
            "--reason",
            "r",
            "--json",
            stdin="S-1",
        )
    )
    out = tmp_path / "r.csv"
    result = run(
        tokens["auditor"], "requests", "export", filed["id"], "--format", "csv", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("seq,occurred_at") and "request.received" in out.read_text()
    pdf = tmp_path / "r.pdf"
    result = run(
        tokens["auditor"], "requests", "export", filed["id"], "--format", "pdf", "--out", str(pdf)
    )
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes().startswith(b"%PDF")
    period = tmp_path / "audit.json"
    result = run(tokens["auditor"], "audit", "export", "--out", str(period))
    assert result.exit_code == 0, result.output
    assert json.loads(period.read_text())["requests_received"] >= 1
