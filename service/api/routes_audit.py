"""Audit: chain verification, period exports, checkpoints and the signing key; tokens."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import select

from service.api.contract import downloads, errors
from service.api.deps import AdminOnly, AnchorDep, AuditRead, SessionDep, audited
from service.api.schemas import IsoDatetime, TokenIn, TokenInfo, TokenOut
from service.api.tokens import create_token, list_tokens, revoke_tokens, token_state
from service.audit.verify import verify_log
from service.core.errors import DomainError
from service.core.security import hash_token
from service.db.tables import ApiToken
from service.reports.build import checkpoint_headers, events_csv, period_report
from service.reports.pdf import period_pdf

router = APIRouter(tags=["audit"])


@router.get("/v1/audit/verify")
def verify(
    session: SessionDep, _: AuditRead, anchor: AnchorDep, incremental: bool = False
) -> dict[str, object]:
    """The chain, every event's MAC and every stored checkpoint; names the first bad event and
    the kind of tampering. ``incremental``: recompute only events after the last verified head
    (every checkpoint is still compared)."""
    return verify_log(session, anchor, incremental=incremental).as_dict()


@router.get(
    "/v1/audit/export", response_model=None, responses=downloads("text/csv", "application/pdf")
)
def export(
    session: SessionDep,
    _: AuditRead,
    anchor: AnchorDep,
    since: IsoDatetime | None = None,
    until: IsoDatetime | None = None,
    format: Literal["json", "csv", "pdf"] = "json",
) -> Response:
    data = period_report(session, since, until, anchor)
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
            headers={
                "content-disposition": 'attachment; filename="audit.csv"',
                **checkpoint_headers(data),
            },
        )
    return JSONResponse(data)


@router.get("/v1/audit/public-key", responses=errors(404))
def public_key(anchor: AnchorDep) -> dict[str, str]:
    """The key that signs audit checkpoints, for auditors who verify offline (public data)."""
    if anchor is None:
        raise DomainError(404, "anchor_not_configured", "checkpoint signing is not configured")
    return anchor.public_info()


@router.get("/v1/audit/checkpoint", responses=errors(404))
def latest_checkpoint(anchor: AnchorDep, _: AuditRead) -> dict[str, object]:
    """The newest signed checkpoint of the chain (keep it: it pins every row up to its seq)."""
    checkpoint = anchor.latest() if anchor is not None else None
    if checkpoint is None:
        raise DomainError(404, "no_checkpoint", "no checkpoint has been written yet")
    return checkpoint.as_dict()


@router.post("/v1/tokens", status_code=201, response_model=TokenOut)
def new_token(body: TokenIn, session: SessionDep, principal: AdminOnly) -> TokenOut:
    token = create_token(
        audited(session),
        body.name,
        body.role,
        principal.actor,
        expires_in_days=body.expires_in_days,
    )
    expires_at = session.scalar(
        select(ApiToken.expires_at).where(ApiToken.token_hash == hash_token(token))
    )
    session.commit()
    return TokenOut(name=body.name, role=body.role, token=token, expires_at=expires_at)


@router.get("/v1/tokens", response_model=list[TokenInfo])
def tokens(session: SessionDep, _: AdminOnly) -> list[TokenInfo]:
    """Every API token: name, role, when it was made, when it expires or was revoked."""
    rows = list_tokens(session)
    return [
        TokenInfo(
            name=r.name,
            role=r.role.value,
            created_at=r.created_at,
            expires_at=r.expires_at,
            revoked_at=r.revoked_at,
            state=token_state(r),
        )
        for r in rows
    ]


@router.post("/v1/tokens/{name}/revoke")
def revoke_token(
    name: Annotated[str, Path(min_length=1, max_length=100)],
    session: SessionDep,
    principal: AdminOnly,
    request: Request,
) -> dict[str, int]:
    """Revoke every live token of that name (effective within a few seconds: lookups are
    cached briefly). Rotation: create the new token, hand it over, then revoke the old name."""
    revoked = revoke_tokens(audited(session), name, principal.actor)
    session.commit()
    request.app.state.token_cache.clear()
    return {"revoked": revoked}
