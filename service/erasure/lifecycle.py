"""The erasure request's state machine (DESIGN.md, "A request's way through")."""

from __future__ import annotations

from service.core.errors import conflict
from service.db.enums import RequestStatus as S

ALLOWED_TRANSITIONS: dict[S, frozenset[S]] = {
    S.received: frozenset({S.approved, S.rejected, S.cancelled}),
    S.approved: frozenset({S.in_progress, S.cancelled, S.failed}),
    # Once retraining has started the only ways out are its outcomes: cancelling half-way
    # would leave a model neither erased nor restored.
    S.in_progress: frozenset({S.completed, S.failed}),
    S.completed: frozenset(),
    S.failed: frozenset(),
    S.rejected: frozenset(),
    S.cancelled: frozenset(),
}


def can_transition(current: S, target: S) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def check_transition(current: str, target: S) -> None:
    if not can_transition(S(current), target):
        raise conflict(
            "invalid_transition",
            f"a request in status '{current}' cannot become '{target.value}'",
            current=current,
            target=target.value,
        )
