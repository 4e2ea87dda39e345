"""The console's request pages: the list, subject look-up, filing, a request's page."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse, RedirectResponse

from service.api.deps import SessionDep, SettingsDep, audited
from service.core.errors import DomainError
from service.core.security import subject_ref
from service.db.enums import Role
from service.erasure.decisions import (
    LEGAL_GROUNDS,
    REJECTION_REASONS,
    VERIFICATION_METHODS,
    verify_identity,
)
from service.erasure.filing import file_request, get_request
from service.web.forms import Form, accept, read_filing
from service.web.render import render
from service.web.sessions import ConsolePrincipal, RequestReader
from service.web.views import Filters, list_requests, progress, request_detail, requests_of_subject

router = APIRouter(prefix="/console", include_in_schema=False)

STATUSES = [
    "open",
    "received",
    "approved",
    "in_progress",
    "completed",
    "failed",
    "rejected",
    "cancelled",
    "all",
]


@router.get("/")
def home(
    session: SessionDep,
    principal: RequestReader,
    status: Annotated[str, Query(max_length=20)] = "open",
    model: Annotated[str, Query(max_length=100)] = "",
    overdue: Annotated[str, Query(max_length=3)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    filters = Filters(status, model, overdue, since, until, page)
    listing = list_requests(session, filters)
    session.commit()  # the session's last-seen time
    return render(
        "requests.html",
        principal,
        listing=listing,
        filters=filters,
        statuses=STATUSES,
        lookup=None,
    )


@router.post("/lookup")
def lookup(
    session: SessionDep, settings: SettingsDep, principal: RequestReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo, Role.auditor, Role.ml_engineer)
    raw = form.get("identifier")
    identifier = raw if isinstance(raw, str) else ""
    filters = Filters()
    listing = list_requests(session, filters)
    if not 1 <= len(identifier.strip()) <= 256:
        return render(
            "requests.html",
            principal,
            422,
            listing=listing,
            filters=filters,
            statuses=STATUSES,
            lookup=None,
            lookup_error="Enter an identifier to look up.",
        )
    ref = subject_ref(settings, identifier)
    session.commit()
    return render(
        "requests.html",
        principal,
        listing=listing,
        filters=filters,
        statuses=STATUSES,
        lookup={"ref": ref, "rows": requests_of_subject(session, ref)},
    )


def _file_page(
    principal: ConsolePrincipal,
    models: list[str],
    status: int = 200,
    errors: list[str] | None = None,
) -> Response:
    return render(
        "file.html",
        principal,
        status,
        models=models,
        grounds=LEGAL_GROUNDS,
        methods=VERIFICATION_METHODS,
        form_key=uuid.uuid4().hex,
        errors=errors or [],
    )


@router.get("/requests/new")
def new_request(session: SessionDep, principal: RequestReader) -> Response:
    from service.web.views import model_names

    if not principal.can(Role.dpo):
        return render(
            "error.html",
            principal,
            403,
            code="forbidden",
            message="Only a data-protection officer can file a request.",
        )
    models = model_names(session)
    session.commit()
    return _file_page(principal, models)


@router.post("/requests")
def file(
    session: SessionDep, settings: SettingsDep, principal: RequestReader, form: Form
) -> Response:
    from service.web.views import model_names

    accept(form, principal, Role.dpo)
    audited(session)
    models = model_names(session)
    filing = read_filing(form, models)
    if filing.new is None:
        return _file_page(principal, models, 422, filing.errors)
    try:
        request, created = file_request(session, settings, filing.new, principal.actor)
        if created and filing.verification is not None:
            verify_identity(session, request, *filing.verification, principal.actor)
    except DomainError as exc:
        session.rollback()
        return _file_page(principal, models, exc.status, [f"{exc.message} ({exc.code})."])
    session.commit()
    return RedirectResponse(f"/console/requests/{request.id}?done=filed", status_code=303)


def request_page(
    session: SessionDep,
    principal: ConsolePrincipal,
    request_id: uuid.UUID,
    status: int = 200,
    error: str | None = None,
    done: str = "",
) -> Response:
    detail = request_detail(session, get_request(session, request_id))
    session.commit()
    return render(
        "request.html",
        principal,
        status,
        d=detail,
        error=error,
        done=done,
        reasons=REJECTION_REASONS,
        methods=VERIFICATION_METHODS,
    )


@router.get("/requests/{request_id}")
def read(
    request_id: uuid.UUID,
    session: SessionDep,
    principal: RequestReader,
    done: Annotated[str, Query(max_length=20, pattern=r"^[a-z_]*$")] = "",
) -> Response:
    return request_page(session, principal, request_id, done=done)


@router.get("/requests/{request_id}/progress")
def live_progress(request_id: uuid.UUID, session: SessionDep, _: RequestReader) -> Response:
    data = progress(session, get_request(session, request_id))
    session.commit()
    return JSONResponse(data, headers={"cache-control": "no-store"})
