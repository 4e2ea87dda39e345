"""Audit: chain verification and period exports; tokens; health."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from service.api.deps import AdminOnly, AuditRead, SessionDep, audited
from service.api.schemas import TokenIn, TokenOut
from service.api.tokens import create_token
from service.audit import verify_chain
from service.audit.pdf import period_pdf
from service.audit.reports import events_csv, period_report

router = APIRouter(tags=["audit"])


@router.get("/v1/audit/verify")
def verify(session: SessionDep, _: AuditRead) -> dict[str, object]:
    return verify_chain(session).as_dict()


@router.get("/v1/audit/export", response_model=None)
def export(
    session: SessionDep,
    _: AuditRead,
    since: datetime | None = None,
    until: datetime | None = None,
    format: Literal["json", "csv", "pdf"] = "json",
) -> Response:
    data = period_report(session, since, until)
    if format == "pdf":
        return Response(
            period_pdf(data),
            media_type="application/pdf",
            headers={"content-disposition": 'attachment; filename="audit.pdf"'},
        )
    if format == "csv":
        return PlainTextResponse(
            events_csv(data["events"]),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="audit.csv"'},
        )
    return JSONResponse(data)


@router.post("/v1/tokens", status_code=201, response_model=TokenOut)
def new_token(body: TokenIn, session: SessionDep, principal: AdminOnly) -> TokenOut:
    token = create_token(audited(session), body.name, body.role, principal.actor)
    session.commit()
    return TokenOut(name=body.name, role=body.role, token=token)


@router.get("/healthz", tags=["health"])
def health(session: SessionDep) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    return {"status": "ok"}
