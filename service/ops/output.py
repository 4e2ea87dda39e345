"""What the operator CLI prints: rich tables for people, ``--json`` for scripts, progress bars
for ``--wait``, and one way to end on an error."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.ops.client import EXIT_TIMEOUT, ApiClient, ApiError, load_profile

out = Console()
err = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    grid = Table(title=title, show_lines=False)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("" if v is None else str(v) for v in row))
    out.print(grid)


@contextmanager
def api(url: str | None) -> Iterator[ApiClient]:
    """A client for one command; an API error ends the command with its exit code."""
    try:
        client = ApiClient(load_profile(url))
    except ApiError as exc:
        fail(exc)
    try:
        yield client
    except ApiError as exc:
        fail(exc)
    finally:
        client.close()


def fail(exc: ApiError) -> None:
    # The API's message never echoes input; printing it is safe.
    err.print(f"[red]error[/red] {exc.code}: {exc.message}")
    raise typer.Exit(exc.exit_code)


def wait_for(
    label: str,
    poll: Callable[[], dict[str, Any]],
    progress_of: Callable[[dict[str, Any]], float],
    finished: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    interval: float = 0.5,
    show: bool = True,
) -> dict[str, Any]:
    """Poll until ``finished``; a progress bar on stderr (stdout stays clean for --json)."""
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=err, disable=not show) as bar:
        task = bar.add_task(label, total=100)
        while True:
            state = poll()
            bar.update(task, completed=round(100 * progress_of(state)))
            if finished(state):
                return state
            if time.monotonic() > deadline:
                fail(ApiError(EXIT_TIMEOUT, "timeout", f"still running after {timeout:.0f} s"))
            time.sleep(interval)
