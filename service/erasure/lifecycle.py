"""A request's life: every status change of a request or of one of its actions, with its audit
event, goes through this module (docs/ARCHITECTURE.md: "A request's way through").

``move_request`` and ``move_action`` (``start_actions`` for several actions at once) are the
only places that assign a status; the named operations below (approve, start, finish, …) are
built on them. The overdue rule lives in ``service.erasure.deadlines``. Everything here
flushes; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.errors import conflict
from service.db.base import utcnow
from service.db.enums import TERMINAL_ACTION_STATUSES, ActionStatus, NoteKind, RequestOutcome
from service.db.enums import RequestStatus as S
from service.db.session import settings_of
from service.db.tables import AuditEvent, ErasureRequest, RequestAction
from service.erasure.deadlines import is_overdue
from service.erasure.no_data import issue_no_data_certificates
from service.erasure.notes import digest_details, keep_note
from service.erasure.shredding import shred_at_end
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_PROCESS_REQUEST

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

# Audit action names read entity.verb.
REQUEST_EVENTS: dict[S, str] = {
    S.received: "request.received",
    S.approved: "request.approved",
    S.in_progress: "request.started",
    S.completed: "request.completed",
    S.failed: "request.failed",
    S.rejected: "request.rejected",
    S.cancelled: "request.cancelled",
}
ACTION_EVENTS: dict[ActionStatus, str] = {
    ActionStatus.done: "action.completed",
    ActionStatus.skipped: "action.skipped",
    ActionStatus.failed: "action.failed",
}

ACTION_TRANSITIONS: dict[ActionStatus, frozenset[ActionStatus]] = {
    ActionStatus.pending: frozenset(
        {ActionStatus.running, ActionStatus.done, ActionStatus.skipped, ActionStatus.failed}
    ),
    ActionStatus.running: frozenset({ActionStatus.done, ActionStatus.failed}),
    ActionStatus.done: frozenset(),
    ActionStatus.skipped: frozenset(),
    ActionStatus.failed: frozenset(),
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


def move_request(
    session: Session,
    request: ErasureRequest,
    target: S,
    *,
    actor: str,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """The one place a request's status changes: checks the transition, stamps the time that
    goes with the new status and appends its event (REQUEST_EVENTS), which it returns."""
    check_transition(request.status, target)
    now = utcnow()
    request.status = target
    if target in (S.approved, S.rejected, S.cancelled):
        request.decided_at = now
        request.decided_by = actor
    elif target == S.in_progress:
        request.started_at = now
    else:  # completed, failed
        request.completed_at = now
    session.flush()
    event = dict(details or {})
    if target in (S.completed, S.failed, S.rejected, S.cancelled):
        # Recorded when the request closes, so reports built from the log alone apply the
        # same overdue rule as the live views.
        event["overdue"] = is_overdue(request, now)
    return append_event(
        session,
        actor=actor,
        action=REQUEST_EVENTS[target],
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details=event,
    )


def _decide(
    session: Session,
    request: ErasureRequest,
    target: S,
    actor: str,
    reason: str,
    kind: NoteKind,
    extra: dict[str, Any] | None = None,
) -> None:
    # The reason is free text typed by a DPO: stored encrypted beside the event (shown back to
    # those who may read it); the log keeps only its keyed hash.
    details = {**digest_details(request, kind, reason), **(extra or {})}
    event = move_request(session, request, target, actor=actor, details=details)
    keep_note(session, request, kind, reason, actor, event)
    if target in (S.rejected, S.cancelled):
        shred_at_end(session, settings_of(session), request, actor)


def approve_request(
    session: Session, settings: Settings, request: ErasureRequest, actor: str, reason: str
) -> None:
    """Requests filed with ``identity_required`` wait for ``decisions.verify_identity``."""
    if request.identity_required and request.identity_verified_at is None:
        raise conflict(
            "identity_not_verified", "the requester's identity must be verified before approval"
        )
    _decide(session, request, S.approved, actor, reason, NoteKind.approval_note)
    enqueue_after_commit(session, settings, TASK_PROCESS_REQUEST, [str(request.id)])


def reject_request(
    session: Session, request: ErasureRequest, actor: str, reason: str, code: str | None = None
) -> None:
    """``code``: one of ``service.erasure.decisions.REJECTION_REASONS`` (the callers'
    schemas check)."""
    request.rejection_code = code
    extra = {"reason_code": code} if code else None
    _decide(session, request, S.rejected, actor, reason, NoteKind.rejection_details, extra)


def cancel_request(session: Session, request: ErasureRequest, actor: str, reason: str) -> None:
    _decide(session, request, S.cancelled, actor, reason, NoteKind.cancellation_reason)


def start_request(
    session: Session, request: ErasureRequest, actor: str, models_in_scope: list[str]
) -> None:
    move_request(
        session, request, S.in_progress, actor=actor, details={"models_in_scope": models_in_scope}
    )


def finish_request_if_done(session: Session, request: ErasureRequest, actor: str) -> bool:
    """Complete (or fail) the request once every action has ended; False while some runs."""
    statuses = list(
        session.scalars(select(RequestAction.status).where(RequestAction.request_id == request.id))
    )
    if any(s not in TERMINAL_ACTION_STATUSES for s in statuses):
        return False
    failed = any(s == ActionStatus.failed for s in statuses)
    if failed:
        request.failure_code = request.failure_code or "action_failed"
    # Data minimisation: the rules now hold what is needed; the request's copy goes.
    request.forget_content = None
    details: dict[str, Any] = {"actions": len(statuses)}
    if failed:
        details["failure_code"] = request.failure_code
    else:
        # Nothing held anywhere: every model in scope was searched and had no record of the
        # subject. That is its own outcome, with its own certificates, not "erased".
        held_nowhere = all(s == ActionStatus.skipped for s in statuses)
        request.outcome = RequestOutcome.no_data_held if held_nowhere else RequestOutcome.erased
        details["outcome"] = request.outcome.value
        if held_nowhere:
            issue_no_data_certificates(session, request, actor)
    move_request(
        session, request, S.failed if failed else S.completed, actor=actor, details=details
    )
    shred_at_end(session, settings_of(session), request, actor)
    return True


def move_action(
    session: Session,
    action: RequestAction,
    target: ActionStatus,
    *,
    actor: str,
    model_name: str,
    details: dict[str, Any] | None = None,
) -> None:
    """The one place an action's status changes. Ending states are audited (ACTION_EVENTS);
    pending → running is recorded by the planner's ``action.planned``."""
    _change_status(action, target)
    if target in TERMINAL_ACTION_STATUSES:
        action.finished_at = utcnow()
    session.flush()
    if target == ActionStatus.running:
        return
    append_event(
        session,
        actor=actor,
        action=ACTION_EVENTS[target],
        target_type="action",
        target_id=str(action.id),
        request_id=action.request_id,
        details={"model": model_name, "strategy": action.strategy.value, **(details or {})},
    )


def start_actions(session: Session, actions: Sequence[RequestAction]) -> None:
    """pending → running for several actions, written in one flush: an activation that puts
    twenty requests' rules in force starts twenty actions in its one transaction, and a flush
    per action was a round trip each. No event, as for `move_action` to running."""
    for action in actions:
        _change_status(action, ActionStatus.running)
    session.flush()


def _change_status(action: RequestAction, target: ActionStatus) -> None:
    if target not in ACTION_TRANSITIONS[action.status]:
        raise conflict(
            "invalid_transition",
            f"an action in status '{action.status}' cannot become '{target.value}'",
        )
    action.status = target


def reopen_action(
    session: Session,
    action: RequestAction,
    request: ErasureRequest,
    code: str,
    *,
    actor: str,
    model_name: str,
) -> None:
    """A finished action whose result a later check refuted runs again: the action back to
    running and a completed request back to in progress, each with its own event. Not a
    transition of the tables above: no other path may re-open what has ended."""
    action.status = ActionStatus.running
    action.finished_at = None
    action.error_code = code
    append_event(
        session,
        actor=actor,
        action="action.reopened",
        target_type="action",
        target_id=str(action.id),
        request_id=action.request_id,
        details={"model": model_name, "strategy": action.strategy.value, "reason": code},
    )
    if request.status != S.completed:
        return
    request.status = S.in_progress
    request.completed_at = None
    request.outcome = None
    append_event(
        session,
        actor=actor,
        action="request.reopened",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details={"reason": code, "model": model_name},
    )


def fail_action(
    session: Session,
    action: RequestAction,
    request: ErasureRequest,
    code: str,
    *,
    actor: str,
    model_name: str,
) -> None:
    action.error_code = code
    request.failure_code = code
    move_action(
        session,
        action,
        ActionStatus.failed,
        actor=actor,
        model_name=model_name,
        details={"error_code": code},
    )
