"""Every allowed and forbidden transition of the request state machine."""

from __future__ import annotations

import itertools

import pytest

from service.core.errors import DomainError
from service.db.enums import RequestStatus as S
from service.erasure.lifecycle import ALLOWED_TRANSITIONS, can_transition, check_transition

EXPECTED_ALLOWED = {
    (S.received, S.approved),
    (S.received, S.rejected),
    (S.received, S.cancelled),
    (S.approved, S.in_progress),
    (S.approved, S.cancelled),
    (S.approved, S.failed),
    (S.in_progress, S.completed),
    (S.in_progress, S.failed),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_transition_table(current: S, target: S) -> None:
    allowed = (current, target) in EXPECTED_ALLOWED
    assert can_transition(current, target) is allowed
    if allowed:
        check_transition(current.value, target)
    else:
        with pytest.raises(DomainError) as info:
            check_transition(current.value, target)
        assert info.value.status == 409 and info.value.code == "invalid_transition"


def test_terminal_states_have_no_way_out() -> None:
    for status in (S.completed, S.failed, S.rejected, S.cancelled):
        assert ALLOWED_TRANSITIONS[status] == frozenset()
