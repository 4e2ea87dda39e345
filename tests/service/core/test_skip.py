"""``Skip``: one vocabulary for "nothing to do", whose values are the strings tasks returned
and actions stored before it existed (they must never change)."""

from __future__ import annotations

from service.core.skip import Skip


def test_values_are_the_names_tasks_and_actions_store() -> None:
    assert all(member.value == member.name for member in Skip)
    assert (
        Skip.not_claimed == "not_claimed" and Skip.no_records_of_subject == "no_records_of_subject"
    )
