"""``Skip``: why a stage has nothing to do. One vocabulary for every stage.

A loader returns ``Inputs | Skip``, a recorder ``Skip | None`` (None: it recorded), a stage
with several outcomes ``<Stage>Result | Skip``; a task returns the member's value, the same
string its Celery result always carried. Values are stored where a skip is recorded (an
action skipped with ``no_records_of_subject``), so a member's value never changes.
"""

from __future__ import annotations

from enum import StrEnum


class Skip(StrEnum):
    # An ML job (service.jobs): who runs it and whether it is still ours.
    not_claimed = "not_claimed"
    """The job is finished, or a live worker holds it."""
    reaped = "reaped"
    """The reaper (or a redelivery) took the job back while it ran: the rerun records it."""
    busy = "busy"
    """Another retrain holds the job's shard or model: the task is sent again after a pause."""
    waiting_for_rules = "waiting_for_rules"
    """Policy ``both``: the request's rules are not active yet; the exact retrain is sent
    again after a pause (suppress first, then remove)."""

    # A request or one of its actions (service.planner, service.rules).
    not_approved = "not_approved"
    """The request has not been approved."""
    terminal = "terminal"
    """The request or action has already ended."""
    held_elsewhere = "held_elsewhere"
    """A live worker holds the action's lease and is activating its rules."""
    no_records_of_subject = "no_records_of_subject"
    """The model holds no record of the subject (the action is skipped with this reason)."""
    held_out_only = "held_out_only"
    """The subject's records were held out for evaluation, never trained on: deleting them
    is the whole erasure."""
    model_untrained = "model_untrained"
    """The model has not been trained yet: deleting the records is the whole erasure."""

    # A rule set's budget calibration (service.rules.budget).
    superseded = "superseded"
    """The rule set is no longer the active one."""
    already_calibrated = "already_calibrated"
    """The rule set's budget was calibrated by an earlier run."""
