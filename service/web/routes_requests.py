"""The console's request pages: the list (searchable by reference and ticket), the subject
look-up (DPOs and admins only), filing (the form keeps what was typed; a warning when the person
already has an open request), a request's page."""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.deps import SessionDep, SettingsDep, audited
from service.core.config import Settings, get_settings
from service.core.errors import DomainError
from service.core.security import subject_ref
from service.db.enums import NoteKind, Role
from service.db.tables import ErasureRequest
from service.erasure.decisions import (
    LEGAL_GROUNDS,
    REJECTION_REASONS,
    VERIFICATION_METHODS,
    verify_identity,
)
from service.erasure.filing import file_request, get_request
from service.erasure.identifiers import identifier_problem
from service.erasure.notes import add_note
from service.erasure.references import reference
from service.erasure.shredding import policy_words
from service.web import drafts
from service.web.forms import FIELD_LABELS, Filing, Form, accept, raw, read_filing
from service.web.render import render, signin_redirect
from service.web.sessions import (
    COOKIE,
    ConsolePrincipal,
    EnrolmentRequired,
    RequestReader,
    SignInRequired,
    SubjectLookup,
    current,
    session_row,
)
from service.web.views import (
    Filters,
    list_requests,
    model_names,
    progress,
    request_detail,
    requests_of_subject,
)

router = APIRouter(prefix="/console", include_in_schema=False)

STATUSES = [
    "open",
    "received",
    "approved",
    "in_progress",
    "completed",
    "no_data_held",
    "failed",
    "rejected",
    "cancelled",
    "all",
]


def _home(
    principal: ConsolePrincipal,
    session: Session,
    filters: Filters,
    status: int = 200,
    **extra: object,
) -> Response:
    listing = list_requests(session, filters)
    session.commit()  # the session's last-seen time
    return render(
        "requests.html",
        principal,
        status,
        listing=listing,
        filters=filters,
        statuses=STATUSES,
        retention=policy_words(get_settings()),
        **extra,
    )


@router.get("/")
def home(
    session: SessionDep,
    principal: RequestReader,
    status: Annotated[str, Query(max_length=20)] = "open",
    model: Annotated[str, Query(max_length=100)] = "",
    overdue: Annotated[str, Query(max_length=3)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    q: Annotated[str, Query(max_length=100)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    return _home(principal, session, Filters(status, model, overdue, since, until, q, page))


@router.post("/lookup")
def lookup(
    session: SessionDep, settings: SettingsDep, principal: SubjectLookup, form: Form
) -> Response:
    accept(form, principal, Role.dpo)
    identifier = raw(form, "identifier")
    problem = "enter an identifier" if not identifier.strip() else identifier_problem(identifier)
    if problem is not None:
        return _home(principal, session, Filters(), 422, lookup_error=f"Identifier: {problem}.")
    ref = subject_ref(settings, identifier)
    rows = requests_of_subject(session, ref)
    return _home(principal, session, Filters(), lookup={"ref": ref, "rows": rows})


def _file_page(
    principal: ConsolePrincipal,
    models: list[str],
    form_key: str,
    status: int = 200,
    *,
    draft: drafts.Draft | None = None,
    errors: dict[str, str] | None = None,
    **extra: object,
) -> Response:
    return render(
        "file.html",
        principal,
        status,
        models=models,
        grounds=LEGAL_GROUNDS,
        methods=VERIFICATION_METHODS,
        form_key=form_key,
        labels=FIELD_LABELS,
        draft=draft or {},
        errors=errors or {},
        **extra,
    )


def _filed_before(session: Session, form_key: str) -> ErasureRequest | None:
    return session.scalar(
        select(ErasureRequest).where(ErasureRequest.idempotency_key == f"console-{form_key}")
    )


@router.get("/requests/new")
def new_request(
    session: SessionDep,
    settings: SettingsDep,
    principal: RequestReader,
    draft: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """A new form gets its own key (in the address, so Back and a reload find the draft)."""
    if not principal.can(Role.dpo):
        return render(
            "error.html",
            principal,
            403,
            title="Not allowed",
            message="Only a data-protection officer can file a request.",
        )
    if not drafts.valid_key(draft):
        session.commit()
        return RedirectResponse(f"/console/requests/new?draft={uuid.uuid4().hex}", status_code=303)
    models = model_names(session)
    kept = drafts.load(session, settings, principal.user_id, draft)
    filed = _filed_before(session, draft)
    session.commit()
    return _file_page(
        principal,
        models,
        draft,
        draft=kept,
        filed=({"id": filed.id, "reference": reference(filed)} if filed else None),
        restored=kept is not None and filed is None,
    )


def _expired_filing(request: Request, session: Session, settings: Settings, form: Form) -> Response:
    """The session ended while the DPO was typing: keep the form (server-side, for the account
    whose page it was, proven by that page's CSRF token), then sign in and come back to it."""
    row = session_row(session, request.cookies.get(COOKIE))
    key = raw(form, "form_key")[:64]
    sent = raw(form, "csrf_token")
    if row is None or not drafts.valid_key(key) or not hmac.compare_digest(sent, row.csrf_token):
        session.rollback()
        return signin_redirect(request)
    drafts.save(session, settings, row.user_id, key, drafts.from_form(form))
    session.commit()
    back = quote(f"/console/requests/new?draft={key}")
    return RedirectResponse(f"/console/signin?next={back}", status_code=303)


def _duplicate_warning(
    session: Session, settings: Settings, filing: Filing, form: Form
) -> list[dict[str, object]]:
    """Open requests of the same person; empty when none, or when the DPO chose to go on."""
    if filing.new is None or raw(form, "file_anyway") == "yes":
        return []
    ref = subject_ref(settings, filing.new.subject_identifier)
    return [
        {"id": r.id, "reference": r.reference, "status": r.status, "received_at": r.received_at}
        for r in requests_of_subject(session, ref, open_only=True)
    ]


@router.post("/requests")
def file(request: Request, session: SessionDep, settings: SettingsDep, form: Form) -> Response:
    try:
        principal = current(request, session)
    except SignInRequired:
        return _expired_filing(request, session, settings, form)
    if principal.must_enrol:
        raise EnrolmentRequired
    accept(form, principal, Role.dpo)
    audited(session)
    models = model_names(session)
    key = raw(form, "form_key")[:64]
    if not drafts.valid_key(key):
        return RedirectResponse("/console/requests/new", status_code=303)
    draft = drafts.from_form(form)
    drafts.save(session, settings, principal.user_id, key, draft)
    filing = read_filing(form, models)
    if filing.new is None:
        session.commit()
        return _file_page(principal, models, key, 422, draft=draft, errors=filing.errors)
    duplicates = _duplicate_warning(session, settings, filing, form)
    if duplicates and _filed_before(session, key) is None:
        session.commit()
        return _file_page(principal, models, key, 200, draft=draft, duplicates=duplicates)
    try:
        filed = _file(session, settings, filing, principal)
    except DomainError as exc:
        session.rollback()
        return _file_page(
            principal, models, key, exc.status, draft=draft, errors={"form": exc.message}
        )
    session.commit()
    return RedirectResponse(f"/console/requests/{filed.id}?done=filed", status_code=303)


def _file(
    session: Session, settings: Settings, filing: Filing, principal: ConsolePrincipal
) -> ErasureRequest:
    assert filing.new is not None
    request, created = file_request(session, settings, filing.new, principal.actor)
    if created:
        request.ticket_ref = filing.ticket_ref
        add_note(session, request, NoteKind.filing_note, filing.note, principal.actor)
        if filing.verification is not None:
            verify_identity(session, request, *filing.verification, principal.actor)
    return request


def request_page(
    session: SessionDep,
    principal: ConsolePrincipal,
    request_id: uuid.UUID,
    status: int = 200,
    error: str | None = None,
    done: str = "",
    kept: dict[str, str] | None = None,
    error_code: str = "",
) -> Response:
    detail = request_detail(session, get_request(session, request_id), principal.role)
    session.commit()
    return render(
        "request.html",
        principal,
        status,
        d=detail,
        error=error,
        error_code=error_code,
        done=done,
        kept=kept or {},
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
