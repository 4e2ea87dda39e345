"""SIGTERM and SIGINT stop lethe's foreground commands as Ctrl-C does, even when the signal
lands in the middle of a database query and the clean-up then fails."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from sqlalchemy import text

from service.db.session import session_factory, transaction
from service.stack.stopping import Stopped, signals_stop, stop_behind


def test_a_clean_up_error_raised_while_stopping_still_says_stopped() -> None:
    with pytest.raises(RuntimeError) as raised:
        try:
            raise Stopped(signal.SIGTERM)
        except Stopped:
            raise RuntimeError("rollback failed: another command is already in progress")  # noqa: B904
    stop = stop_behind(raised.value)
    assert stop is not None and stop.signum == signal.SIGTERM
    assert stop_behind(RuntimeError("an error of its own")) is None
    assert stop_behind(Stopped(signal.SIGINT)) is not None


def test_a_signal_during_a_query_is_found_behind_the_error_on_the_way_out(
    database_url: str,
) -> None:
    """SIGTERM arrives while PostgreSQL sleeps in a query: whatever the transaction's clean-up
    raises on the way out, ``Stopped`` is behind it."""
    factory = session_factory(database_url)
    caught: BaseException | None = None
    with signals_stop():
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        try:
            with transaction(factory) as session:
                timer.start()
                session.execute(text("SELECT pg_sleep(10)"))
        except Exception as error:  # Stopped, or the clean-up's error raised over it
            caught = error
        finally:
            timer.cancel()
    assert caught is not None
    stop = stop_behind(caught)
    # What CI once met in `lethe demo`: psycopg's "another command is already in progress",
    # raised by the rollback over Stopped, made the demo exit 1 instead of 128 + SIGTERM.
    assert stop is not None and stop.signum == signal.SIGTERM, repr(caught)
