"""A request's short human handle, ``LR-<year received>-<number>`` (e.g. LR-2026-00042): the
number comes from one database sequence, so it is unique and never reused; the year only
helps a reader. Searching accepts the whole handle or its number alone."""

from __future__ import annotations

import re

from service.db.tables import ErasureRequest

PREFIX = "LR"
_HANDLE = re.compile(r"^\s*(?:LR-?\d{4}-?)?0*(\d{1,12})\s*$", re.IGNORECASE)


def reference(request: ErasureRequest) -> str:
    return f"{PREFIX}-{request.received_at.year}-{request.number:05d}"


def number_in(query: str) -> int | None:
    """The request number a search names (``LR-2026-00042``, ``lr-2026-42`` or ``42``)."""
    match = _HANDLE.match(query)
    return int(match.group(1)) if match else None
