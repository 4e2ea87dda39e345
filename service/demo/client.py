"""What both halves of the demo do over HTTP: fail loudly on an error answer, and wait for a
worker's job with a progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from tqdm import tqdm


def check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise SystemExit(
            f"{response.request.method} {response.request.url.path} failed: "
            f"{response.status_code} {response.text}"
        )
    return response.json()


def wait(
    poll: Callable[[], Any],
    describe: str,
    done: Callable[[Any], tuple[float, bool]],
    timeout: float = 1800,
) -> Any:
    """Poll until ``done(state)`` says finished; its fraction drives the bar."""
    deadline = time.monotonic() + timeout
    with tqdm(total=100, desc=describe, unit="%", bar_format="{l_bar}{bar}| {n:.0f}%") as bar:
        while True:
            state = poll()
            progress, finished = done(state)
            bar.n = round(100 * progress)
            bar.refresh()
            if finished:
                return state
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out: {describe}")
            time.sleep(0.5)
