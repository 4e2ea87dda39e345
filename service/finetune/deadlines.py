"""Exact removal past its due date (policy ``both``): the rules stay active, and the reaper
records each late action once in the audit log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.db.base import utcnow
from service.db.enums import ActionStatus, Strategy
from service.db.tables import MlModel, RequestAction


def flag_overdue_exact(session: Session, actor: str, now: datetime | None = None) -> int:
    """One ``action.exact_overdue`` event per open exact action past its due date; returns
    how many were flagged now (an action is flagged once)."""
    moment = now or utcnow()
    open_exact = session.scalars(
        select(RequestAction)
        .where(
            RequestAction.strategy == Strategy.exact_retrain,
            RequestAction.status.in_([ActionStatus.pending, ActionStatus.running]),
        )
        .with_for_update(skip_locked=True)
    )
    flagged = 0
    for action in open_exact:
        due = action.detail.get("exact_due_at")
        if due is None or action.detail.get("overdue_flagged_at"):
            continue
        if datetime.fromisoformat(due) >= moment:
            continue
        action.detail = {**action.detail, "overdue_flagged_at": moment.isoformat()}
        model = session.get_one(MlModel, action.model_id)
        append_event(
            session,
            actor=actor,
            action="action.exact_overdue",
            target_type="action",
            target_id=str(action.id),
            request_id=action.request_id,
            details={"model": model.name, "exact_due_at": due, "rules_active": True},
        )
        flagged += 1
    return flagged
