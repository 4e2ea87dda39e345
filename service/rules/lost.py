"""Rule activations whose worker died with them: found by the reaper, sent again.

An activation has no job row; its ``update_verifier_rules`` task holds a lease keyed by the
action's id (service.jobs.leases) while it runs. A running action whose lease is free lost
its worker (kill -9 of a pool child is redelivered by the broker, but a killed main process
takes the message with it on the database broker); a pending one whose request was decided
longer ago than ``redispatch_seconds`` may have lost its message. Either is sent again, less and
less often while it stays so (service.queue.resends); a duplicate is harmless (the task exits
on a terminal action, and only one can hold the lease). A running action whose rules are
already in force (its worker died after the activating commit) is sent again the same way:
the task then only certifies (service.rules.certify).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.db.base import utcnow
from service.db.enums import ActionStatus, Strategy
from service.db.tables import ErasureRequest, RequestAction
from service.jobs.leases import leases_for
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_UPDATE_VERIFIER_RULES
from service.queue.resends import resend_due


def resend_lost_activations(session: Session, settings: Settings) -> int:
    now = utcnow()
    redispatch = now - timedelta(seconds=settings.redispatch_seconds)
    rows = session.execute(
        select(RequestAction.id, RequestAction.status, ErasureRequest.decided_at)
        .join(ErasureRequest, ErasureRequest.id == RequestAction.request_id)
        .where(
            RequestAction.strategy == Strategy.verifier_rules,
            RequestAction.status.in_([ActionStatus.pending, ActionStatus.running]),
        )
    ).all()
    leases = leases_for(session)
    resent = 0
    for action_id, status, decided_at in rows:
        if status == ActionStatus.pending and (decided_at is None or decided_at >= redispatch):
            continue
        if not leases.take(action_id):
            continue  # a live worker is activating it
        leases.release(action_id)
        if resend_due(
            session, TASK_UPDATE_VERIFIER_RULES, action_id, settings.redispatch_seconds, now
        ):
            enqueue_after_commit(session, settings, TASK_UPDATE_VERIFIER_RULES, [str(action_id)])
            resent += 1
    return resent
