"""``lethe audit export``: a period's audit report from the API, as JSON, CSV or PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from service.core.storage import write_private
from service.ops.output import api, out
from service.ops.requests import ApiUrl


def export(
    output: Annotated[Path, typer.Option("--out", help="file to write")],
    since: Annotated[str | None, typer.Option(help="ISO date or time, inclusive")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date or time, exclusive")] = None,
    fmt: Annotated[Literal["json", "csv", "pdf"], typer.Option("--format")] = "json",
    url: ApiUrl = None,
) -> None:
    """Export the audit log of a period (from the API) to a file."""
    params = {k: v for k, v in {"since": since, "until": until, "format": fmt}.items() if v}
    with api(url) as client:
        response = client.request("GET", "/v1/audit/export", params=params)
    write_private(output, response.content)
    out.print(f"wrote {output} ({len(response.content)} bytes)")
