"""What a request asks a generative model to forget: sealed under the request's data key, read
only by workers (and unreadable once the key is destroyed)."""

from __future__ import annotations

import json
import re
from typing import Any

from models.generative.rules import Fact, ForgetSpec
from service.core.config import Settings
from service.core.security import open_sealed, seal_for
from service.db.tables import ErasureRequest

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[\d\s().-]{7,}$")


def forget_payload(subject_identifier: str, forget: dict[str, Any] | None) -> dict[str, Any]:
    """The subject's identifier joins the identifiers to forget, as the kind it looks like."""
    payload: dict[str, Any] = {
        "names": [],
        "aliases": [],
        "emails": [],
        "phones": [],
        "facts": [],
        **(forget or {}),
    }
    ident = subject_identifier.strip()
    kind = "emails" if _EMAIL.match(ident) else "phones" if _PHONE.match(ident) else "names"
    if ident and ident not in payload[kind]:
        payload[kind] = [ident, *payload[kind]]
    return payload


def seal(settings: Settings, key_id: str | None, payload: dict[str, Any]) -> bytes:
    return seal_for(settings, key_id, json.dumps(payload, sort_keys=True).encode())


def forget_spec(settings: Settings, request: ErasureRequest) -> ForgetSpec:
    if request.forget_content is None:
        raise ValueError("the request carries no forget content")
    data = json.loads(open_sealed(settings, request.forget_content))
    return ForgetSpec(
        subject_names=list(data.get("names", [])),
        aliases=list(data.get("aliases", [])),
        emails=list(data.get("emails", [])),
        phones=list(data.get("phones", [])),
        facts=[
            Fact(
                question=f.get("question"),
                answer=f["answer"],
                key_spans=list(f.get("key_spans") or []),
            )
            for f in data.get("facts", [])
        ],
    )
