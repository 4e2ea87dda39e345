"""Reading the console's forms: CSRF first, then bounded fields; errors never echo input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import FormData

from service.erasure.decisions import LEGAL_GROUNDS, VERIFICATION_METHODS
from service.erasure.filing import NewRequest
from service.web.sessions import ConsoleForbidden, ConsolePrincipal, check_csrf


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=300)


Form = Annotated[FormData, Depends(_form)]


def accept(form: FormData, principal: ConsolePrincipal, *roles: Any) -> None:
    """Every console POST: the session's CSRF token, then the role."""
    check_csrf(principal.csrf_token, form)
    if not principal.can(*roles):
        raise ConsoleForbidden


def text(form: FormData, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def lines(form: FormData, name: str) -> list[str]:
    return [ln.strip() for ln in text(form, name, 100_000).splitlines() if ln.strip()]


@dataclass
class Filing:
    new: NewRequest | None
    errors: list[str] = field(default_factory=list)
    verification: tuple[str, str] | None = None


def read_filing(form: FormData, models: list[str]) -> Filing:
    errors: list[str] = []
    raw = form.get("subject_id")
    subject = raw.strip() if isinstance(raw, str) else ""
    if not 1 <= len(subject) <= 256:
        errors.append("Identifier: enter one identifier of up to 256 characters.")
    forget: dict[str, Any] = {}
    for key, label in (("names", "Names"), ("emails", "E-mail addresses"), ("phones", "Phones")):
        values = lines(form, key)
        if len(values) > 20 or any(len(v) > 200 for v in values):
            errors.append(f"{label}: at most 20 lines of up to 200 characters.")
        forget[key] = values
    facts = lines(form, "facts")
    if len(facts) > 200 or any(len(f) > 2000 for f in facts):
        errors.append("Facts: at most 200 lines of up to 2000 characters.")
    forget["facts"] = [{"question": None, "answer": f} for f in facts]
    ground = text(form, "legal_ground", 1)
    if ground not in LEGAL_GROUNDS:
        errors.append("Legal ground: choose one of Art. 17(1)(a) to (f).")
    scope: list[str] | None = None
    if text(form, "scope_kind") == "chosen":
        scope = [m for m in form.getlist("scope") if isinstance(m, str)]
        if not scope or any(m not in models for m in scope):
            errors.append("Scope: choose at least one registered model.")
    method, reference = text(form, "identity_method", 40), text(form, "identity_reference", 200)
    verification = None
    if method or reference:
        if method not in VERIFICATION_METHODS or not reference:
            errors.append("Identity verification: choose a method and give a reference.")
        verification = (method, reference)
    key = text(form, "form_key", 64)
    if not key:
        errors.append("The form is incomplete: reload the page.")
    if errors:
        return Filing(None, errors)
    notes = text(form, "notes")
    has_forget = any(forget[k] for k in ("names", "emails", "phones", "facts"))
    new = NewRequest(
        subject_identifier=subject,
        reason=notes or LEGAL_GROUNDS[ground],
        scope=scope,
        forget={**forget, "aliases": []} if has_forget else None,
        idempotency_key=f"console-{key}",
        legal_ground=ground,
        identity_required=True,
    )
    return Filing(new, [], verification)
