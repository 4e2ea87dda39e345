"""Inference-time unlearning tasks (service.rules): activate a request's verifier rules within
seconds (suppression: the commit that makes the version active), certify the requests it put
in force in a transaction right after (service.rules.certify), then, with real generations,
recalibrate λ on the model's own leaks and calibrate the refinement budget B and the early
exit (service.rules.budget), re-issuing the certificates.

Each task: load (one transaction) → calibrate or generate (no transaction open) → record (one
transaction).
"""

from __future__ import annotations

import uuid
from functools import partial

from celery import shared_task

from service.core.skip import Skip
from service.jobs.leases import leases_for
from service.queue.names import TASK_CALIBRATE_BUDGET, TASK_UPDATE_VERIFIER_RULES
from service.rules import activation, budget, certify
from workers.base import DbTask, db_task_options

ACTOR = "worker"
# Concurrent activations for one model: recalibrate on the newer base this many times.
MAX_ACTIVATION_ATTEMPTS = 5


@shared_task(name=TASK_UPDATE_VERIFIER_RULES, **db_task_options(max_retries=5))
def update_verifier_rules(self: DbTask, action_id: str) -> str:
    aid = uuid.UUID(action_id)
    # Held while the task runs: the reaper then knows a live worker is on this action
    # (service.rules.lost); a kill -9 frees it with the process.
    with self.transaction(audited=False) as session:
        leases = leases_for(session)
        if not leases.take(aid):
            return Skip.held_elsewhere.value
    try:
        return _activate(self, aid)
    finally:
        leases.release(aid)


def _activate(self: DbTask, aid: uuid.UUID) -> str:
    suppressed = _suppress(self, aid)
    if isinstance(suppressed, Skip):
        return suppressed.value
    # The rules are in force (committed); a crash from here on leaves the action running with
    # the version named in it, and the next run of this task only certifies.
    with self.transaction() as session:
        certify.certify_activation(session, self.settings, suppressed.rule_set_id, ACTOR)
    return activation.ActivationResult.activated.value


def _suppress(self: DbTask, aid: uuid.UUID) -> activation.Suppressed | Skip:
    """Load, calibrate and activate: returns once the version with the action's rules is
    active (committed), or found so by the load of a run after a crash."""
    for _ in range(MAX_ACTIVATION_ATTEMPTS):
        with self.transaction() as session:
            inputs = activation.load_activation(session, self.settings, aid, ACTOR)
        if not isinstance(inputs, activation.ActivationInputs):
            return inputs
        calibrated = activation.calibrate(inputs)
        with self.transaction() as session:
            outcome = activation.record_activation(
                session, self.settings, inputs, calibrated, ACTOR
            )
        if not isinstance(outcome, activation.ActivationResult):  # stale: on the new base
            return outcome
    raise RuntimeError("rule activation kept losing to concurrent activations")


@shared_task(name=TASK_CALIBRATE_BUDGET, **db_task_options(max_retries=5))
def calibrate_budget_task(self: DbTask, rule_set_id: str) -> str:
    with self.transaction() as session:
        inputs = budget.load_budget(session, self.settings, uuid.UUID(rule_set_id))
    if isinstance(inputs, Skip):
        return inputs.value
    try:
        outcome = budget.calibrate(inputs, partial(_still_served, self, inputs.rule_set_id))
    except budget.Abandoned:
        return Skip.superseded.value
    with self.transaction() as session:
        skipped = budget.record_budget(session, inputs, outcome, ACTOR)
    return "calibrated" if skipped is None else skipped.value


def _still_served(task: DbTask, rule_set_id: uuid.UUID) -> bool:
    """One short transaction between generations (none is held across them)."""
    with task.transaction() as session:
        return budget.still_served(session, rule_set_id)
