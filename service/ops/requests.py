"""``lethe requests …``: file, list, show, decide, extend and export erasure requests, over
the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from service.core.storage import write_private
from service.ops.client import EXIT_FAILED
from service.ops.output import api, emit_json, out, table, wait_for

app = typer.Typer(help="Erasure requests (speaks to the API: LETHE_API_URL, LETHE_API_TOKEN).")

ApiUrl = Annotated[str | None, typer.Option("--api-url", help="default: LETHE_API_URL")]
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
Reason = Annotated[str, typer.Option(help="why (kept on the request, never in the log)")]
FINISHED = ("completed", "failed", "rejected", "cancelled")
SubjectFile = Annotated[
    str | None,
    typer.Option(
        "--subject-file",
        help="a file holding the subject's identifier ('-': standard input); none given: "
        "read from standard input, or asked for without echo at a terminal",
    ),
]


def read_subject(source: str | None) -> str:
    """The identifier from a file, standard input or a hidden prompt: never from the command
    line, where shell history and the process list would keep it."""
    if source == "-" or (source is None and not sys.stdin.isatty()):
        text = sys.stdin.readline()
    elif source is None:
        text = typer.prompt("Subject identifier", hide_input=True)
    else:
        text = Path(source).read_text()
    identifier = text.strip()
    if not identifier:
        raise typer.BadParameter("no subject identifier given", param_hint="--subject-file")
    return identifier


def _progress(request: dict[str, Any]) -> float:
    actions = request.get("actions") or []
    if request["status"] in FINISHED:
        return 1.0
    return sum(a["progress"] for a in actions) / len(actions) if actions else 0.0


def _show(request: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(request)
        return
    out.print(
        f"[bold]{request['id']}[/bold]  status={request['status']}  due={request['due_at']}"
        f"{'  [red]OVERDUE[/red]' if request['overdue'] else ''}"
    )
    out.print(f"subject reference {request['subject_ref']}")
    if request.get("actions"):
        table(
            "actions",
            ["model", "strategy", "status", "progress"],
            [
                (a["model"], a["strategy"], a["status"], f"{a['progress']:.0%}")
                for a in request["actions"]
            ],
        )
    for cert in request.get("certificates") or []:
        out.print(f"[bold]{cert['kind']}[/bold] for {cert['model']}: {cert['plain_words']}")


def _finish(
    request: dict[str, Any], as_json: bool, wait: bool, url: str | None, timeout: float
) -> None:
    if wait and request["status"] not in FINISHED:
        with api(url) as client:
            request = wait_for(
                "erasure",
                lambda: client.get(f"/v1/requests/{request['id']}"),
                _progress,
                lambda r: r["status"] in FINISHED,
                timeout=timeout,
                show=not as_json,
            )
    _show(request, as_json)
    if wait and request["status"] == "failed":
        raise typer.Exit(EXIT_FAILED)


@app.command("file")
def file_request(
    reason: Reason,
    subject_file: SubjectFile = None,
    model: Annotated[
        list[str] | None, typer.Option(help="a model in scope (repeat); none: all")
    ] = None,
    legal_ground: Annotated[str | None, typer.Option(help="GDPR Art. 17(1) point: a to f")] = None,
    forget: Annotated[Path | None, typer.Option(help="JSON file of names/facts to forget")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="files one request however often sent")
    ] = None,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """File an erasure request (the identifier is hashed by the server, never stored)."""
    body: dict[str, Any] = {"subject_id": read_subject(subject_file), "reason": reason}
    if model:
        body["scope"] = list(model)
    if legal_ground:
        body["legal_ground"] = legal_ground
    if forget is not None:
        body["forget"] = json.loads(forget.read_text())
    headers = {"idempotency-key": idempotency_key} if idempotency_key else None
    with api(url) as client:
        request = client.post("/v1/requests", body, headers=headers)
    _show(request, as_json)


@app.command("list")
def list_requests(
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    overdue: Annotated[bool | None, typer.Option("--overdue/--not-overdue")] = None,
    limit: int = 100,
    offset: int = 0,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """List requests, newest first."""
    with api(url) as client:
        page = client.get(
            "/v1/requests", status=status, overdue=overdue, limit=limit, offset=offset
        )
    if as_json:
        emit_json(page)
        return
    table(
        f"{page['total']} request(s)",
        ["id", "status", "received", "due", "overdue"],
        [
            (
                r["id"],
                r["status"],
                r["received_at"][:16],
                r["due_at"][:16],
                "yes" if r["overdue"] else "",
            )
            for r in page["items"]
        ],
    )


@app.command("show")
def show(request_id: str, url: ApiUrl = None, as_json: AsJson = False) -> None:
    """A request with its actions and certificates."""
    with api(url) as client:
        request = client.get(f"/v1/requests/{request_id}")
    _show(request, as_json)


@app.command("approve")
def approve(
    request_id: str,
    reason: Reason = "approved by the DPO",
    wait: Annotated[bool, typer.Option(help="follow the erasure to its end")] = False,
    timeout: float = 3600,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Approve a request; with --wait, follow it with a progress bar until it ends."""
    with api(url) as client:
        request = client.post(f"/v1/requests/{request_id}/approve", {"reason": reason})
    _finish(request, as_json, wait, url, timeout)


@app.command("reject")
def reject(
    request_id: str,
    reason: Reason,
    code: Annotated[
        str | None, typer.Option(help="coded ground, e.g. manifestly_unfounded")
    ] = None,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Reject a request, with a coded reason."""
    body: dict[str, Any] = {"reason": reason}
    if code:
        body["code"] = code
    with api(url) as client:
        _show(client.post(f"/v1/requests/{request_id}/reject", body), as_json)


@app.command("cancel")
def cancel(request_id: str, reason: Reason, url: ApiUrl = None, as_json: AsJson = False) -> None:
    """Cancel a request that has not started."""
    with api(url) as client:
        _show(client.post(f"/v1/requests/{request_id}/cancel", {"reason": reason}), as_json)


@app.command("extend")
def extend(
    request_id: str,
    months: Annotated[int, typer.Option(min=1, max=2, help="one or two more months")],
    reason: Reason,
    url: ApiUrl = None,
    as_json: AsJson = False,
) -> None:
    """Extend the deadline (GDPR Art. 12(3): by two more months at most, with a reason)."""
    with api(url) as client:
        body = {"months": months, "reason": reason}
        _show(client.post(f"/v1/requests/{request_id}/extend", body), as_json)


@app.command("export")
def export(
    request_id: str,
    output: Annotated[Path, typer.Option("--out", help="file to write")],
    fmt: Annotated[Literal["json", "csv", "pdf"], typer.Option("--format")] = "json",
    url: ApiUrl = None,
) -> None:
    """Write the request's audit report (built from the audit log) to a file."""
    with api(url) as client:
        response = client.request(
            "GET", f"/v1/requests/{request_id}/report", params={"format": fmt}
        )
    write_private(output, response.content)
    out.print(f"wrote {output} ({len(response.content)} bytes)")
