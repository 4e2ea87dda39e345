"""Closing actions and requests once their ML work is done. Runs inside a task's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.audit import append_event
from service.db.base import utcnow
from service.db.enums import ActionStatus, JobStatus, RequestStatus
from service.db.tables import (
    ActionJob,
    ErasureRequest,
    Job,
    MlModel,
    RequestAction,
    TrainingRecord,
)
from service.erasure.certificates import exact_retrain_body, issue_certificate
from service.erasure.lifecycle import check_transition

TERMINAL_ACTION = (ActionStatus.done, ActionStatus.skipped, ActionStatus.failed)


def purge_records(session: Session, request_id: uuid.UUID, model_id: uuid.UUID) -> int:
    """Delete the erased rows' content; the index row stays as a tombstone for the audit."""
    result = session.execute(
        update(TrainingRecord)
        .where(
            TrainingRecord.model_id == model_id,
            TrainingRecord.erasure_request_id == request_id,
            TrainingRecord.erased_at.is_(None),
        )
        .values(payload=None, label=None, erased_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def records_erased(session: Session, request_id: uuid.UUID, model_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        select(TrainingRecord.split, func.count())
        .where(TrainingRecord.model_id == model_id, TrainingRecord.erasure_request_id == request_id)
        .group_by(TrainingRecord.split)
    ).all()
    counts = {"train": 0, "holdout": 0}
    counts.update({split: int(n) for split, n in rows})
    return counts


def finish_exact_action(
    session: Session,
    action: RequestAction,
    request: ErasureRequest,
    model: MlModel,
    *,
    shards: list[dict[str, Any]],
    version_before: int | None,
    version_after: int | None,
    actor: str,
    note: str | None = None,
) -> None:
    body = exact_retrain_body(
        request=request,
        model=model,
        shards=shards,
        records_erased=records_erased(session, request.id, model.id),
        version_before=version_before,
        version_after=version_after,
        note=note,
    )
    issue_certificate(session, action, model, body, actor)
    purged = purge_records(session, request.id, model.id)
    action.status = ActionStatus.done
    action.finished_at = utcnow()
    append_event(
        session,
        actor=actor,
        action="records.erased",
        target_type="model",
        target_id=str(model.id),
        request_id=request.id,
        details={"model": model.name, "records": purged},
    )
    session.flush()


def job_results_for_action(session: Session, action_id: uuid.UUID) -> list[Job]:
    return list(
        session.scalars(
            select(Job)
            .join(ActionJob, ActionJob.job_id == Job.id)
            .where(ActionJob.action_id == action_id)
            .order_by(Job.shard)
        )
    )


def finish_request_if_done(session: Session, request: ErasureRequest, actor: str) -> bool:
    statuses = list(
        session.scalars(select(RequestAction.status).where(RequestAction.request_id == request.id))
    )
    if any(s not in TERMINAL_ACTION for s in statuses):
        return False
    failed = any(s == ActionStatus.failed for s in statuses)
    target = RequestStatus.failed if failed else RequestStatus.completed
    check_transition(request.status, target)
    request.status = target
    request.completed_at = utcnow()
    # Data minimisation: the rules now hold what is needed; the request's copy goes.
    request.forget_content = None
    if failed:
        request.failure_code = request.failure_code or "action_failed"
    session.flush()
    append_event(
        session,
        actor=actor,
        action=f"request.{target.value}",
        target_type="request",
        target_id=str(request.id),
        request_id=request.id,
        details={
            "actions": len(statuses),
            "overdue": request.completed_at > request.due_at,
            **({"failure_code": request.failure_code} if failed else {}),
        },
    )
    return True


def fail_action(
    session: Session, action: RequestAction, request: ErasureRequest, code: str, actor: str
) -> None:
    action.status = ActionStatus.failed
    action.error_code = code
    action.finished_at = utcnow()
    request.failure_code = code
    append_event(
        session,
        actor=actor,
        action="action.failed",
        target_type="action",
        target_id=str(action.id),
        request_id=request.id,
        details={"error_code": code},
    )
    session.flush()


def all_jobs_done(jobs: list[Job]) -> bool:
    return all(j.status == JobStatus.done for j in jobs)
