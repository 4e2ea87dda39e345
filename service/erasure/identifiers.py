"""What a subject identifier may be, checked at filing and at look-up: a clear refusal for an
identifier no record could carry (empty once normalised, too long, or holding control
characters such as a NUL byte) instead of a request that "completes" having found nobody."""

from __future__ import annotations

import unicodedata

from service.core.errors import invalid
from service.core.security import normalise_identifier

MAX_IDENTIFIER = 256
# Control characters (NUL, line breaks, escapes), unpaired surrogates and the line/paragraph
# separators: none belongs in an e-mail address, a name or a key (the API's schema says the same,
# service.api.schemas.IDENTIFIER_PATTERN).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def identifier_problem(raw: str) -> str | None:
    """Why the identifier cannot be used, in words for the form; None when it can."""
    if len(raw) > MAX_IDENTIFIER:
        return f"it has {len(raw):,} characters; the most is {MAX_IDENTIFIER}"
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in raw.strip()):
        return "it contains control or invisible characters (was it pasted from a file?)"
    if not normalise_identifier(raw):
        return "it is empty"
    return None


def check_identifier(raw: str) -> None:
    problem = identifier_problem(raw)
    if problem is not None:
        raise invalid("invalid_identifier", f"the subject identifier cannot be used: {problem}")
