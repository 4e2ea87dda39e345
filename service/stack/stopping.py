"""Stopping lethe's foreground commands on SIGTERM as on Ctrl-C.

Python's default SIGTERM ends the process at once, without running ``finally`` blocks: the
worker and the embedded PostgreSQL that ``lethe serve`` or ``lethe demo`` started would outlive
it. Inside ``signals_stop()`` SIGTERM and SIGINT raise ``Stopped`` instead, so every context
manager on the way out stops what it started.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """SIGTERM or SIGINT arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_behind(error: BaseException) -> Stopped | None:
    """The ``Stopped`` that ``error`` was raised while handling, if any (or ``error`` itself).
    The signal can land in the middle of a database query; the transaction's clean-up on the
    way out then fails on that connection ("another command is already in progress") and its
    error replaces ``Stopped``: the command was still stopped by the signal."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, Stopped):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal must not interrupt the shutdown the first one started.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Stopped(signum)


@contextmanager
def signals_stop() -> Iterator[None]:
    """SIGTERM and SIGINT raise ``Stopped`` in the main thread for the block's duration (also
    where a library such as uvicorn catches the signal and raises it again after its own
    shutdown)."""
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _raise_stopped)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
