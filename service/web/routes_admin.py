"""Audit (export, verify the chain), models (read-only) and accounts (admins)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from service.api.deps import SessionDep, SettingsDep, audited
from service.audit.verify import verify_log
from service.core.errors import DomainError
from service.db.enums import Role
from service.db.tables import ConsoleUser, MlModel, ModelVersion, RuleSetVersion
from service.finetune.records import is_finetuned
from service.reports.build import checkpoint_headers, events_csv, period_report
from service.reports.pdf import period_pdf
from service.web.accounts import (
    active_admins,
    disable_user,
    enable_user,
    invite_user,
    list_users,
)
from service.web.forms import Form, accept, raw, text
from service.web.render import render
from service.web.servers import server_rows
from service.web.sessions import Admin, AuditReader, ConsolePrincipal, Member

router = APIRouter(prefix="/console", include_in_schema=False)
ROLES = [r.value for r in Role]
AccountChange = Callable[[Session, str, str], ConsoleUser]


def _tampered(request: Request) -> list[Any]:
    """Tampers the checkpoint signers recorded, earliest first (the console's banner)."""
    anchor = request.app.state.anchor
    return sorted(anchor.tamper_records(), key=lambda p: p.seq) if anchor else []


@router.get("/audit")
def audit_page(request: Request, session: SessionDep, principal: AuditReader) -> Response:
    session.commit()
    return render("audit.html", principal, verification=None, tampered=_tampered(request))


@router.post("/audit/verify")
def audit_verify(
    request: Request, session: SessionDep, principal: AuditReader, form: Form
) -> Response:
    accept(form, principal, Role.dpo, Role.auditor)
    result = verify_log(session, request.app.state.anchor).as_dict()
    session.commit()
    return render("audit.html", principal, verification=result, tampered=_tampered(request))


def _day(value: str) -> datetime | None:
    try:
        return datetime.combine(datetime.fromisoformat(value).date(), time.min, tzinfo=UTC)
    except ValueError:
        return None


@router.get("/audit/export")
def audit_export(
    request: Request,
    session: SessionDep,
    _: AuditReader,
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    format: Literal["pdf", "csv", "json"] = "pdf",
) -> Response:
    start, end = _day(since), _day(until)
    data = period_report(
        session, start, end + timedelta(days=1) if end else None, request.app.state.anchor
    )
    session.commit()
    disposition = {"content-disposition": f'attachment; filename="audit.{format}"'}
    if format == "pdf":
        return Response(period_pdf(data), media_type="application/pdf", headers=disposition)
    if format == "csv":
        return PlainTextResponse(
            events_csv(data["events"]),
            media_type="text/csv",
            headers={**disposition, **checkpoint_headers(data)},
        )
    return Response(json.dumps(data, indent=2), media_type="application/json", headers=disposition)


def _pct(x: object) -> str:
    return f"{100 * float(x):.3g} %" if isinstance(x, int | float) else "-"


def calibration_words(row: RuleSetVersion) -> str:
    cal = row.calibration
    th = cal.get("threshold") or {}
    parts = [
        f"Rule-set version {row.version} screens every answer against {row.rule_count} "
        f"rule(s) for {len(row.request_ids)} request(s)."
    ]
    if cal.get("threshold_certified"):
        parts.append(
            f"At most {_pct(th.get('alpha'))} of leaking answers can get past, with "
            f"{_pct(1 - float(th.get('delta', 0)))} confidence (threshold "
            f"{float(cal.get('serving_threshold', 0)):.3g}, from {th.get('n')} calibration "
            f"leaks)."
        )
    else:
        parts.append(
            "No guarantee could be certified; serving uses the policy's fallback threshold "
            f"{float(cal.get('serving_threshold', 0)):.3g}."
        )
    parts.append(f"A flagged answer is regenerated at most {cal.get('serving_budget')} times.")
    if cal.get("false_flag_rate") is not None:
        parts.append(f"{_pct(cal['false_flag_rate'])} of harmless answers were flagged.")
    return " ".join(parts)


@router.get("/models")
def models_page(session: SessionDep, settings: SettingsDep, principal: Member) -> Response:
    models = []
    for m in session.scalars(select(MlModel).order_by(MlModel.name)):
        versions = list(
            session.scalars(
                select(ModelVersion)
                .where(ModelVersion.model_id == m.id)
                .order_by(ModelVersion.number)
            )
        )
        active = session.scalar(
            select(RuleSetVersion).where(
                RuleSetVersion.model_id == m.id, RuleSetVersion.status == "active"
            )
        )
        calibration = calibration_words(active) if active is not None else None
        models.append(
            {
                "m": m,
                "versions": versions,
                "active": active,
                "words": calibration,
                "finetuned": is_finetuned(m),
            }
        )
    servers = server_rows(session, settings)
    session.commit()
    return render("models.html", principal, models=models, servers=servers)


def _users_page(
    session: SessionDep, principal: ConsolePrincipal, status: int = 200, **extra: object
) -> Response:
    users = list_users(session)
    admins = active_admins(session)
    session.commit()
    return render("users.html", principal, status, users=users, roles=ROLES, admins=admins, **extra)


@router.get("/users")
def users_page(session: SessionDep, principal: Admin) -> Response:
    return _users_page(session, principal)


@router.post("/users")
def users_invite(request: Request, session: SessionDep, principal: Admin, form: Form) -> Response:
    """An invitation: a single-use link shown once, here, for the admin to pass on; the
    person chooses their own password with it."""
    accept(form, principal)
    audited(session)
    kept = {"email": raw(form, "email")[:254], "name": raw(form, "name")[:100]}
    try:
        token, invite = invite_user(
            session,
            text(form, "email", 254),
            text(form, "role", 20),
            raw(form, "name"),
            principal.actor,
        )
    except DomainError as exc:
        session.rollback()
        return _users_page(session, principal, exc.status, error=f"{exc.message}.", kept=kept)
    session.commit()
    link = str(request.base_url).rstrip("/") + f"/console/invite/{token}"
    return _users_page(session, principal, invited={"link": link, "expires_at": invite.expires_at})


def _account_change(
    session: SessionDep, principal: ConsolePrincipal, form: FormData, change: AccountChange
) -> Response:
    accept(form, principal)
    audited(session)
    try:
        change(session, text(form, "email", 254), principal.actor)
    except DomainError as exc:
        session.rollback()
        return _users_page(session, principal, exc.status, error=f"{exc.message}.")
    session.commit()
    return RedirectResponse("/console/users", status_code=303)


@router.post("/users/disable")
def users_disable(session: SessionDep, principal: Admin, form: Form) -> Response:
    return _account_change(session, principal, form, disable_user)


@router.post("/users/enable")
def users_enable(session: SessionDep, principal: Admin, form: Form) -> Response:
    return _account_change(session, principal, form, enable_user)
