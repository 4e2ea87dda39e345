"""bench/audit.py end to end on a small log: the events it loads verify under lethe's own
verification (so the figures time a log that passes), and every figure is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.audit import main


def test_the_bench_runs_on_a_small_log(
    pg_server: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from service.core.config import get_settings

    # The bench sets these for its own run; put back what the suite had afterwards.
    monkeypatch.setenv("LETHE_ENVIRONMENT", "development")
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        main(
            [
                "--events", "400", "--increment", "40", "--period", "100",
                "--reports", "5", "--checkpoint-every", "25", "--pdf-period", "20",
                "--server", pg_server,
            ]
        )  # fmt: skip
    finally:
        get_settings.cache_clear()
    out = json.loads(capsys.readouterr().out)
    verification = out["verification"]
    assert verification["events"] == 440 and verification["checkpoints"] == 16
    assert verification["incremental_new_events"] == 40
    assert out["exports"]["period_events"] == 100 and out["exports"]["pdf_period_events"] == 20
    assert out["request_report"]["reports"] == 5
