"""Reading the console's forms: CSRF first, then bounded fields. A field that is too long is an
error the DPO sees, never silently cut; errors name the field, never echo its value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.datastructures import FormData

from service.erasure.decisions import LEGAL_GROUNDS, VERIFICATION_METHODS
from service.erasure.filing import NewRequest
from service.erasure.identifiers import identifier_problem
from service.web.sessions import ConsoleForbidden, ConsolePrincipal, check_csrf

NOTE_LIMIT = 2000
# How the error summary names each field of the filing form.
FIELD_LABELS = {
    "subject_id": "Identifier",
    "names": "Other names",
    "emails": "Other e-mail addresses",
    "phones": "Phone numbers",
    "facts": "Facts to forget",
    "scope": "Scope",
    "legal_ground": "Legal ground",
    "identity_method": "Identity verification method",
    "identity_reference": "Reference of the check",
    "ticket_ref": "Your ticket or case reference",
    "notes": "Notes",
    "form_key": "The form",
}


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=300)


Form = Annotated[FormData, Depends(_form)]


def accept(form: FormData, principal: ConsolePrincipal, *roles: Any) -> None:
    """Every console POST: the session's CSRF token, then the role."""
    check_csrf(principal.csrf_token, form)
    if not principal.can(*roles):
        raise ConsoleForbidden


def raw(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def text(form: FormData, name: str, limit: int = NOTE_LIMIT) -> str:
    """A short field whose length the page's own input already bounds (select values, codes)."""
    return raw(form, name).strip()[:limit]


def too_long(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"{len(value):,} characters; the most is {limit:,}"
    return None


def lines(value: str) -> list[str]:
    return [ln.strip() for ln in value.splitlines() if ln.strip()]


@dataclass
class Filing:
    new: NewRequest | None
    # Field name -> what is wrong with it (shown beside the field and in a summary).
    errors: dict[str, str] = field(default_factory=dict)
    verification: tuple[str, str] | None = None
    note: str = ""
    ticket_ref: str | None = None


def _forget(form: FormData, errors: dict[str, str]) -> dict[str, Any]:
    forget: dict[str, Any] = {}
    for key in ("names", "emails", "phones"):
        values = lines(raw(form, key))
        if len(values) > 20 or any(len(v) > 200 for v in values):
            errors[key] = "at most 20 lines of up to 200 characters each"
        forget[key] = values
    facts = lines(raw(form, "facts"))
    if len(facts) > 200 or any(len(f) > 2000 for f in facts):
        errors["facts"] = "at most 200 lines of up to 2,000 characters each"
    forget["facts"] = [{"question": None, "answer": f} for f in facts]
    return forget


def _verification(form: FormData, errors: dict[str, str]) -> tuple[str, str] | None:
    method, reference = text(form, "identity_method", 40), raw(form, "identity_reference").strip()
    if not (method or reference):
        return None
    if method not in VERIFICATION_METHODS:
        errors["identity_method"] = "choose how the identity was checked, or clear the reference"
    if not reference:
        errors["identity_reference"] = "give the check's reference (a ticket or case number)"
    elif problem := too_long(reference, 200):
        errors["identity_reference"] = problem
    return method, reference


def read_filing(form: FormData, models: list[str]) -> Filing:
    errors: dict[str, str] = {}
    subject = raw(form, "subject_id")
    if not subject.strip():
        errors["subject_id"] = "enter the identifier the models' data use for this person"
    elif problem := identifier_problem(subject):
        errors["subject_id"] = problem
    forget = _forget(form, errors)
    ground = text(form, "legal_ground", 1)
    if ground not in LEGAL_GROUNDS:
        errors["legal_ground"] = "choose one of Art. 17(1)(a) to (f)"
    scope: list[str] | None = None
    if text(form, "scope_kind") == "chosen":
        scope = [m for m in form.getlist("scope") if isinstance(m, str)]
        if not scope or any(m not in models for m in scope):
            errors["scope"] = "choose at least one registered model"
    verification = _verification(form, errors)
    ticket = raw(form, "ticket_ref").strip()
    if problem := too_long(ticket, 100):
        errors["ticket_ref"] = problem
    note = raw(form, "notes").strip()
    if problem := too_long(note, NOTE_LIMIT):
        errors["notes"] = problem
    key = text(form, "form_key", 64)
    if not key:
        errors["form_key"] = "the form is incomplete: reload the page"
    if errors:
        return Filing(None, errors)
    has_forget = any(forget[k] for k in ("names", "emails", "phones", "facts"))
    new = NewRequest(
        subject_identifier=subject,
        # Not the DPO's note: that is kept encrypted (service.erasure.notes), not in clear.
        reason=LEGAL_GROUNDS[ground],
        scope=scope,
        forget={**forget, "aliases": []} if has_forget else None,
        idempotency_key=f"console-{key}",
        legal_ground=ground,
        identity_required=True,
    )
    return Filing(new, {}, verification, note, ticket or None)


def read_note(form: FormData, name: str, *, required: str | None = None) -> tuple[str, str | None]:
    """A free-text note and what is wrong with it (None when fine)."""
    value = raw(form, name).strip()
    if required and not value:
        return value, required
    return value, too_long(value, NOTE_LIMIT)
