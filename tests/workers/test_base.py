"""DbTask counts the units of work it has open."""

from __future__ import annotations


def test_the_counter_sees_an_open_unit_of_work() -> None:
    from workers.base import DbTask, open_transactions

    task = DbTask()
    assert open_transactions() == 0
    with task.transaction(audited=False):
        assert open_transactions() == 1
    assert open_transactions() == 0
