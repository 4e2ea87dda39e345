"""The operator CLI's exit codes: bad token, forbidden, not found, invalid input, no API."""

from __future__ import annotations

from typing import Any

import pytest

from service.ops import client as exits
from service.stack.processes import free_port


def test_exit_codes(run: Any, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("lethe_not-a-token", "requests", "list").exit_code == exits.EXIT_AUTH
    # An auditor may read but not file.
    denied = run(
        tokens["auditor"], "requests", "file", "--subject-file", "-", "--reason", "r", stdin="x"
    )
    assert denied.exit_code == exits.EXIT_AUTH and "forbidden" in denied.output
    missing = run(tokens["dpo"], "requests", "show", "00000000-0000-0000-0000-000000000000")
    assert missing.exit_code == exits.EXIT_NOT_FOUND
    bad = run(
        tokens["dpo"],
        "requests",
        "file",
        "--subject-file",
        "-",
        "--reason",
        "r",
        "--model",
        "nope",
        stdin="x",
    )
    assert bad.exit_code == exits.EXIT_INVALID and "nope" not in bad.output
    monkeypatch.setenv("LETHE_API_URL", f"http://127.0.0.1:{free_port()}")
    assert run(tokens["dpo"], "requests", "list").exit_code == exits.EXIT_UNAVAILABLE
