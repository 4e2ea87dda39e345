"""A request's actions in the console (approve, reject, cancel, verify identity, extend the
deadline) and its downloads. Same roles as the API; the handler commits."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from sqlalchemy.orm import Session

from service.api.deps import SessionDep, SettingsDep, audited
from service.core.errors import DomainError, invalid
from service.db.enums import Role
from service.db.tables import ErasureRequest
from service.erasure.decisions import REJECTION_REASONS, extend_deadline, verify_identity
from service.erasure.filing import get_request
from service.erasure.lifecycle import approve_request, cancel_request, reject_request
from service.reports.build import events_csv, request_report
from service.reports.pdf import request_pdf
from service.web.forms import Form, accept, text
from service.web.routes_requests import request_page
from service.web.sessions import AuditReader, ConsolePrincipal, RequestReader

router = APIRouter(prefix="/console/requests", include_in_schema=False)

Act = Callable[[ErasureRequest], None]


def _decide(
    request_id: uuid.UUID, session: Session, principal: ConsolePrincipal, act: Act, done: str
) -> Response:
    """Run one decision on the locked request; a refused one re-renders the page with why."""
    request = get_request(audited(session), request_id, lock=True)
    try:
        act(request)
    except DomainError as exc:
        session.rollback()
        return request_page(
            session, principal, request_id, exc.status, error=f"{exc.message} ({exc.code})."
        )
    session.commit()
    return RedirectResponse(f"/console/requests/{request_id}?done={done}", status_code=303)


@router.post("/{request_id}/approve")
def approve(
    request_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    principal: RequestReader,
    form: Form,
) -> Response:
    accept(form, principal, Role.dpo)
    note = text(form, "reason") or "approved in the console"
    return _decide(
        request_id,
        session,
        principal,
        lambda r: approve_request(session, settings, r, principal.actor, note),
        "approved",
    )


@router.post("/{request_id}/reject")
def reject(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    code, note = text(form, "code", 40), text(form, "reason")

    def act(r: ErasureRequest) -> None:
        if code not in REJECTION_REASONS:
            raise invalid("unknown_rejection_reason", "choose a reason for the rejection")
        if code == "other" and not note:
            raise invalid("reason_required", "describe the reason for the rejection")
        reject_request(session, r, principal.actor, note or REJECTION_REASONS[code], code)

    return _decide(request_id, session, principal, act, "rejected")


@router.post("/{request_id}/cancel")
def cancel(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    note = text(form, "reason") or "cancelled in the console"
    return _decide(
        request_id,
        session,
        principal,
        lambda r: cancel_request(session, r, principal.actor, note),
        "cancelled",
    )


@router.post("/{request_id}/verify")
def verify(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    method, reference = text(form, "method", 40), text(form, "reference", 200)

    def act(r: ErasureRequest) -> None:
        if not reference:
            raise invalid("reference_required", "give a reference for the verification")
        verify_identity(session, r, method, reference, principal.actor)

    return _decide(request_id, session, principal, act, "verified")


@router.post("/{request_id}/extend")
def extend(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    months_text, reason = text(form, "months", 2), text(form, "reason")

    def act(r: ErasureRequest) -> None:
        if months_text not in ("1", "2"):
            raise invalid("extension_too_long", "extend by one or two months")
        if not reason:
            raise invalid("reason_required", "give the reason for the extension (Art. 12(3))")
        extend_deadline(session, r, int(months_text), reason, principal.actor)

    return _decide(request_id, session, principal, act, "extended")


@router.get("/{request_id}/report.{fmt}")
def download(
    request_id: uuid.UUID,
    fmt: Literal["pdf", "csv", "json"],
    session: SessionDep,
    _: AuditReader,
) -> Response:
    get_request(session, request_id)
    data = request_report(session, request_id)
    session.commit()
    name = f"request-{request_id}.{fmt}"
    disposition = {"content-disposition": f'attachment; filename="{name}"'}
    if fmt == "pdf":
        return Response(request_pdf(data), media_type="application/pdf", headers=disposition)
    if fmt == "csv":
        return PlainTextResponse(
            events_csv(data["events"]), media_type="text/csv", headers=disposition
        )
    import json

    return Response(json.dumps(data, indent=2), media_type="application/json", headers=disposition)
