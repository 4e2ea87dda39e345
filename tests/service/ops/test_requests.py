"""``lethe requests …`` against a live API: file, list, approve, show, cancel, extend, reject, with
``--json`` output parsed."""

from __future__ import annotations

import json
from typing import Any

from service.ops import client as exits
from tests.support.api import SentTasks, cli_json
from tests.support.sample_data import CANARY_SUBJECT
from tests.support.tasks import drain


def test_requests_commands(run: Any, tokens: dict[str, str], sent_tasks: SentTasks) -> None:
    dpo, auditor = tokens["dpo"], tokens["auditor"]
    filed = cli_json(
        run(
            dpo,
            "requests",
            "file",
            "--subject-file",
            "-",
            "--reason",
            "art 17",
            "--json",
            stdin=CANARY_SUBJECT,
        )
    )
    assert filed["status"] == "received" and CANARY_SUBJECT not in json.dumps(filed)
    listed = cli_json(run(auditor, "requests", "list", "--status", "received", "--json"))
    assert filed["id"] in [r["id"] for r in listed["items"]]
    approved = cli_json(run(dpo, "requests", "approve", filed["id"], "--json"))
    assert approved["status"] == "approved"
    drain(sent_tasks)  # the worker's part: no model in scope, so the request completes
    shown = cli_json(run(auditor, "requests", "show", filed["id"], "--json"))
    assert shown["status"] == "completed"

    other = cli_json(
        run(
            dpo,
            "requests",
            "file",
            "--subject-file",
            "-",
            "--reason",
            "r",
            "--json",
            stdin="S-0009",
        )
    )
    assert (
        cli_json(run(dpo, "requests", "cancel", other["id"], "--reason", "withdrawn", "--json"))[
            "status"
        ]
        == "cancelled"
    )
    again = run(dpo, "requests", "cancel", other["id"], "--reason", "twice")
    assert again.exit_code == exits.EXIT_CONFLICT and "invalid_transition" in again.output
    third = cli_json(
        run(
            dpo,
            "requests",
            "file",
            "--subject-file",
            "-",
            "--reason",
            "r",
            "--json",
            stdin="S-0010",
        )
    )
    extended = run(
        dpo, "requests", "extend", third["id"], "--months", "1", "--reason", "complex", "--json"
    )
    assert cli_json(extended)["extended_months"] == 1
    assert run(dpo, "requests", "extend", third["id"], "--months", "3", "--reason", "x").exit_code
    rejected = run(
        dpo,
        "requests",
        "reject",
        third["id"],
        "--reason",
        "unfounded",
        "--code",
        "manifestly_unfounded",
        "--json",
    )
    assert cli_json(rejected)["status"] == "rejected"
    assert cli_json(rejected)["rejection_code"] == "manifestly_unfounded"


def test_the_identifier_never_comes_from_the_command_line(
    run: Any, tokens: dict[str, str], tmp_path: Any
) -> None:
    dpo = tokens["dpo"]
    refused = run(dpo, "requests", "file", "--subject", CANARY_SUBJECT, "--reason", "r")
    assert refused.exit_code != 0 and "No such option" in refused.output
    held = tmp_path / "subject.txt"
    held.write_text(CANARY_SUBJECT + "\n")
    from_file = run(dpo, "requests", "file", "--subject-file", str(held), "--reason", "r")
    from_stdin = run(dpo, "requests", "file", "--reason", "r", "--json", stdin=CANARY_SUBJECT)
    assert from_file.exit_code == 0 and cli_json(from_stdin)["status"] == "received"
    empty = run(dpo, "requests", "file", "--reason", "r", stdin="\n")
    assert empty.exit_code != 0 and "no subject identifier" in empty.output
