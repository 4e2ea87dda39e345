"""Erasure requests: file, list, read, decide, timeline, report."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.contract import downloads
from service.api.deps import (
    AnchorDep,
    AuditRead,
    DpoWrite,
    RequestRead,
    SessionDep,
    SettingsDep,
    audited,
)
from service.api.schemas import (
    ActionOut,
    CertificateOut,
    DecisionIn,
    ExtendIn,
    FileRequestIn,
    RejectIn,
    RequestList,
    RequestOut,
    TimelineEvent,
    VerifyIdentityIn,
)
from service.db.base import utcnow
from service.db.enums import ActionStatus, RequestStatus
from service.db.tables import (
    ActionJob,
    Certificate,
    ErasureRequest,
    Job,
    MlModel,
    RequestAction,
    RuleSetVersion,
)
from service.erasure.certificates import chained_bodies, is_certified, matches_chain, plain_words
from service.erasure.deadlines import is_overdue, overdue_clause
from service.erasure.decisions import extend_deadline, verify_identity
from service.erasure.filing import NewRequest, file_request, get_request, request_timeline
from service.erasure.lifecycle import approve_request, cancel_request, reject_request
from service.erasure.references import reference
from service.reports.annotate import with_words
from service.reports.build import checkpoint_headers, events_csv, request_report
from service.reports.pdf import request_pdf
from service.rules.activation import rules_in_force

router = APIRouter(
    prefix="/v1/requests",
    tags=["erasure requests"],
)


def exact_due(action: RequestAction) -> dict[str, Any]:
    """Policy "both": the exact action's due date; overdue while not done after it."""
    due = action.detail.get("exact_due_at")
    if due is None:
        return {}
    due_at = datetime.fromisoformat(due)
    late = action.finished_at if action.status == ActionStatus.done else utcnow()
    return {"exact_due_at": due_at, "exact_overdue": late is not None and late > due_at}


def request_out(session: Session, request: ErasureRequest, *, detail: bool = True) -> RequestOut:
    out = RequestOut(
        id=request.id,
        subject_ref=request.subject_ref,
        status=request.status,
        scope=request.scope,
        received_at=request.received_at,
        due_at=request.due_at,
        overdue=is_overdue(request),
        decided_at=request.decided_at,
        decided_by=request.decided_by,
        started_at=request.started_at,
        completed_at=request.completed_at,
        failure_code=request.failure_code,
        legal_ground=request.legal_ground,
        identity_required=request.identity_required,
        identity_verified_at=request.identity_verified_at,
        rejection_code=request.rejection_code,
        extended_months=request.extended_months,
        reference=reference(request),
        ticket_ref=request.ticket_ref,
        outcome=request.outcome.value if request.outcome else None,
    )
    if not detail:
        return out
    out.actions = _actions_out(session, request)
    history = _certificates_out(session, request)
    out.certificates = [c for c in history if not c.superseded]
    out.certificate_history = history
    if out.certificates:
        out.certified = all(is_certified(c.kind) for c in out.certificates)
    return out


def _actions_out(session: Session, request: ErasureRequest) -> list[ActionOut]:
    """One per model in scope, with the progress of the jobs it waits for."""
    rows = session.execute(
        select(RequestAction, MlModel.name)
        .join(MlModel, MlModel.id == RequestAction.model_id)
        .where(RequestAction.request_id == request.id)
        .order_by(MlModel.name)
    ).all()
    actions = []
    for action, model_name in rows:
        jobs = list(
            session.scalars(
                select(Job)
                .join(ActionJob, ActionJob.job_id == Job.id)
                .where(ActionJob.action_id == action.id)
            )
        )
        done = action.status in (ActionStatus.done, ActionStatus.skipped)
        progress = 1.0 if done else (sum(j.progress for j in jobs) / len(jobs) if jobs else 0.0)
        actions.append(
            ActionOut(
                model=model_name,
                strategy=action.strategy,
                status=action.status,
                progress=round(progress, 4),
                shards=list(action.detail.get("shards", [])),
                error_code=action.error_code,
                rules_in_force_since=_rules_in_force_since(session, action),
                deletion_failures=0 if done else _deletion_failures(jobs),
                **exact_due(action),
            )
        )
    return actions


def _deletion_failures(jobs: list[Job]) -> int:
    """Failed tries at deleting what the action's jobs superseded
    (service.jobs.lifecycle.record_destroy_failure counts them on the job)."""
    return sum(int((j.result or {}).get("destroy_failures", 0)) for j in jobs)


def _rules_in_force_since(session: Session, action: RequestAction) -> datetime | None:
    """The activation of the version that put a still-running action's rules in force."""
    rule_set_id = rules_in_force(action)
    if rule_set_id is None or action.status != ActionStatus.running:
        return None
    row = session.get(RuleSetVersion, rule_set_id)
    return row.activated_at if row is not None else None


def _certificates_out(session: Session, request: ErasureRequest) -> list[CertificateOut]:
    """Every certificate issued for the request, superseded ones included, by model and in
    the order they were issued."""
    certs = session.execute(
        select(Certificate, MlModel.name)
        .join(MlModel, MlModel.id == Certificate.model_id)
        .where(Certificate.request_id == request.id)
        .order_by(MlModel.name, Certificate.audit_seq)
    ).all()
    chained = chained_bodies(session, [c for c, _ in certs])
    out = []
    for c, name in certs:
        body = chained.get(c.audit_seq)
        shown = body if body is not None else c.body
        out.append(
            CertificateOut(
                model=name,
                kind=str(shown.get("kind", c.kind)),
                plain_words=plain_words(shown),
                body=shown,
                body_sha256=c.body_hash,
                audit_seq=c.audit_seq,
                superseded=c.superseded_at is not None,
                matches_audit_log=matches_chain(c, body),
            )
        )
    return out


@router.post("", status_code=201, response_model=RequestOut)
def file(
    body: FileRequestIn,
    session: SessionDep,
    settings: SettingsDep,
    principal: DpoWrite,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RequestOut:
    audited(session)
    new = NewRequest(
        subject_identifier=body.subject_id,
        reason=body.reason,
        scope=body.scope,
        forget=body.forget.model_dump() if body.forget else None,
        idempotency_key=idempotency_key,
        legal_ground=body.legal_ground,
    )
    request, created = file_request(session, settings, new, principal.actor)
    if created and body.identity_verification is not None:
        verify_identity(
            session,
            request,
            body.identity_verification.method,
            body.identity_verification.reference,
            principal.actor,
        )
    session.commit()
    if not created:
        response.status_code = 200
    return request_out(session, request)


@router.get("", response_model=RequestList)
def list_requests(
    session: SessionDep,
    _: RequestRead,
    status: RequestStatus | None = None,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> RequestList:
    stmt = select(ErasureRequest)
    if status is not None:
        stmt = stmt.where(ErasureRequest.status == status)
    if overdue is not None:
        stmt = stmt.where(overdue_clause() if overdue else ~overdue_clause())
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(ErasureRequest.received_at.desc()).limit(limit).offset(offset)
    )
    return RequestList(items=[request_out(session, r, detail=False) for r in rows], total=total)


@router.get("/{request_id}", response_model=RequestOut)
def read(request_id: uuid.UUID, session: SessionDep, _: RequestRead) -> RequestOut:
    return request_out(session, get_request(session, request_id))


def _decide(
    session: Session, request_id: uuid.UUID, decision: Callable[[ErasureRequest], object]
) -> RequestOut:
    """One DPO decision: lock the request, apply it (with its audit event), commit, answer.
    Work it creates for the workers is sent only after this commit (service.queue)."""
    request = get_request(audited(session), request_id, lock=True)
    decision(request)
    session.commit()
    return request_out(session, request)


@router.post("/{request_id}/approve", response_model=RequestOut)
def approve(
    request_id: uuid.UUID,
    body: DecisionIn,
    session: SessionDep,
    settings: SettingsDep,
    principal: DpoWrite,
) -> RequestOut:
    return _decide(
        session,
        request_id,
        lambda r: approve_request(session, settings, r, principal.actor, body.reason),
    )


@router.post("/{request_id}/reject", response_model=RequestOut)
def reject(
    request_id: uuid.UUID, body: RejectIn, session: SessionDep, principal: DpoWrite
) -> RequestOut:
    return _decide(
        session,
        request_id,
        lambda r: reject_request(session, r, principal.actor, body.reason, body.code),
    )


@router.post("/{request_id}/verify-identity", response_model=RequestOut)
def verify(
    request_id: uuid.UUID, body: VerifyIdentityIn, session: SessionDep, principal: DpoWrite
) -> RequestOut:
    return _decide(
        session,
        request_id,
        lambda r: verify_identity(session, r, body.method, body.reference, principal.actor),
    )


@router.post("/{request_id}/extend", response_model=RequestOut)
def extend(
    request_id: uuid.UUID, body: ExtendIn, session: SessionDep, principal: DpoWrite
) -> RequestOut:
    """Extend the deadline by one or two months, two at most in all (GDPR Art. 12(3))."""
    return _decide(
        session,
        request_id,
        lambda r: extend_deadline(session, r, body.months, body.reason, principal.actor),
    )


@router.post("/{request_id}/cancel", response_model=RequestOut)
def cancel(
    request_id: uuid.UUID, body: DecisionIn, session: SessionDep, principal: DpoWrite
) -> RequestOut:
    return _decide(
        session, request_id, lambda r: cancel_request(session, r, principal.actor, body.reason)
    )


@router.get("/{request_id}/timeline", response_model=list[TimelineEvent])
def timeline(request_id: uuid.UUID, session: SessionDep, _: RequestRead) -> list[TimelineEvent]:
    get_request(session, request_id)
    return [
        TimelineEvent(
            seq=e.seq,
            occurred_at=e.occurred_at,
            actor=e.actor,
            action=e.action,
            target_type=e.target_type,
            target_id=e.target_id,
            details=e.details,
            hash=e.hash,
        )
        for e in request_timeline(session, request_id)
    ]


@router.get(
    "/{request_id}/report",
    response_model=None,
    responses=downloads("text/csv", "application/pdf"),
)
def report(
    request_id: uuid.UUID,
    session: SessionDep,
    _: AuditRead,
    anchor: AnchorDep,
    format: Literal["json", "csv", "pdf"] = "json",
) -> Response:
    request = get_request(session, request_id)
    # The log's report, with the request's reference, ticket and the DPO's words (AuditRead).
    data = with_words(session, request, request_report(session, request_id, anchor))
    if format == "pdf":
        return Response(
            request_pdf(data),
            media_type="application/pdf",
            headers={"content-disposition": f'attachment; filename="request-{request_id}.pdf"'},
        )
    if format == "csv":
        return PlainTextResponse(
            events_csv(data["events"]),
            media_type="text/csv",
            headers={
                "content-disposition": f'attachment; filename="request-{request_id}.csv"',
                **checkpoint_headers(data),
            },
        )
    return JSONResponse(data)
