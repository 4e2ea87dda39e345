"""A request's actions in the console (approve, reject, cancel, verify identity, extend the
deadline) and its downloads. Same roles as the API; the handler commits. Irreversible ones
(reject, cancel) have no default reason and need an explicit confirmation."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from sqlalchemy.orm import Session

from service.api.deps import SessionDep, SettingsDep, audited
from service.core.errors import DomainError, invalid
from service.db.enums import Role
from service.db.tables import ErasureRequest
from service.erasure.decisions import REJECTION_REASONS, extend_deadline, verify_identity
from service.erasure.filing import get_request
from service.erasure.lifecycle import approve_request, cancel_request, reject_request
from service.reports.annotate import with_words
from service.reports.build import checkpoint_headers, events_csv, request_report
from service.reports.pdf import request_pdf
from service.web.forms import Form, accept, raw, read_note, text
from service.web.routes_requests import request_page
from service.web.sessions import AuditReader, ConsolePrincipal, RequestReader

router = APIRouter(prefix="/console/requests", include_in_schema=False)

Act = Callable[[ErasureRequest], None]


def _decide(
    request_id: uuid.UUID,
    session: Session,
    principal: ConsolePrincipal,
    act: Act,
    done: str,
    kept: dict[str, str] | None = None,
) -> Response:
    """Run one decision on the locked request; a refused one re-renders the page with why,
    keeping what was typed."""
    request = get_request(audited(session), request_id, lock=True)
    try:
        act(request)
    except DomainError as exc:
        session.rollback()
        message = exc.message[:1].upper() + exc.message[1:] + "."
        return request_page(
            session, principal, request_id, exc.status, message, kept=kept, error_code=exc.code
        )
    session.commit()
    return RedirectResponse(f"/console/requests/{request_id}?done={done}", status_code=303)


def _checked_note(form: Any, name: str, required: str | None = None) -> str:
    value, problem = read_note(form, name, required=required)
    if problem is not None:
        raise invalid("invalid_note", problem)
    return value


@router.post("/{request_id}/approve")
def approve(
    request_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    principal: RequestReader,
    form: Form,
) -> Response:
    accept(form, principal, Role.dpo)

    def act(r: ErasureRequest) -> None:
        note = _checked_note(form, "reason")
        approve_request(session, settings, r, principal.actor, note)

    return _decide(
        request_id, session, principal, act, "approved", {"a-reason": raw(form, "reason")}
    )


@router.post("/{request_id}/reject")
def reject(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    code = text(form, "code", 40)
    kept = {"r-code": code, "r-reason": raw(form, "reason")}

    def act(r: ErasureRequest) -> None:
        if code not in REJECTION_REASONS:
            raise invalid("unknown_rejection_reason", "choose the reason for the rejection")
        required = "describe the reason for the rejection" if code == "other" else None
        note = _checked_note(form, "reason", required)
        if text(form, "confirm", 3) != "yes":
            raise invalid("confirmation_required", "tick the box to confirm the rejection")
        reject_request(session, r, principal.actor, note, code)

    return _decide(request_id, session, principal, act, "rejected", kept)


@router.post("/{request_id}/cancel")
def cancel(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)

    def act(r: ErasureRequest) -> None:
        note = _checked_note(form, "reason", "give the reason for cancelling")
        if text(form, "confirm", 3) != "yes":
            raise invalid("confirmation_required", "tick the box to confirm the cancellation")
        cancel_request(session, r, principal.actor, note)

    return _decide(
        request_id, session, principal, act, "cancelled", {"c-reason": raw(form, "reason")}
    )


@router.post("/{request_id}/verify")
def verify(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    method = text(form, "method", 40)

    def act(r: ErasureRequest) -> None:
        ref = _checked_note(form, "reference", "give a reference for the verification")
        if len(ref) > 200:
            raise invalid("reference_too_long", "the reference has more than 200 characters")
        verify_identity(session, r, method, ref, principal.actor)

    kept = {"v-method": method, "v-ref": raw(form, "reference")}
    return _decide(request_id, session, principal, act, "verified", kept)


@router.post("/{request_id}/extend")
def extend(
    request_id: uuid.UUID, session: SessionDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    months_text = text(form, "months", 2)

    def act(r: ErasureRequest) -> None:
        if months_text not in ("1", "2"):
            raise invalid("extension_too_long", "extend by one or two months")
        reason = _checked_note(form, "reason", "give the reason for the extension (Art. 12(3))")
        extend_deadline(session, r, int(months_text), reason, principal.actor)

    kept = {"e-months": months_text, "e-reason": raw(form, "reason")}
    return _decide(request_id, session, principal, act, "extended", kept)


@router.get("/{request_id}/report.{fmt}")
def download(
    http: Request,
    request_id: uuid.UUID,
    fmt: Literal["pdf", "csv", "json"],
    session: SessionDep,
    principal: AuditReader,
) -> Response:
    request = get_request(session, request_id)
    report = request_report(session, request.id, http.app.state.anchor)
    data = with_words(session, request, report)
    session.commit()
    name = f"{data['reference']}.{fmt}"
    disposition = {"content-disposition": f'attachment; filename="{name}"'}
    if fmt == "pdf":
        return Response(request_pdf(data), media_type="application/pdf", headers=disposition)
    if fmt == "csv":
        return PlainTextResponse(
            events_csv(data["events"]),
            media_type="text/csv",
            headers={**disposition, **checkpoint_headers(data)},
        )
    return Response(json.dumps(data, indent=2), media_type="application/json", headers=disposition)
