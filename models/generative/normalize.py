"""Text normalisation shared by the rule compiler, the verifier, the decoder guard and the oracle.

Every component that decides "is this the same text?" goes through these helpers, so that a
span banned during decoding, a span flagged by the verifier and a span counted by the oracle are
compared under one definition of equality.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter

from rapidfuzz.distance import Indel

# Unicode letters and digits; "_" is a word character for `\w` but never part of a name.
_WORD = re.compile(r"[^\W_]+")
# Where one sentence ends and the next begins (the verifier's units, back-off, streams).
SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\n+")
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
# Obfuscated forms people (and models) write to dodge filters: "jane [at] x [dot] org".
_OBF_AT = re.compile(
    r"\s*[\[\(\{<]\s*at\s*[\]\)\}>]\s*"  # "[at]", "(at)", …
    r"|\s+at\s+(?=[\w\-]+\s*(?:\.|[\[\(\{<]?\s*dot))"  # " at " only when a domain follows
)
_OBF_DOT = re.compile(r"\s*[\[\(\{<]\s*dot\s*[\]\)\}>]\s*|\s+dot\s+")
# A run of digits with the separators phone numbers are written with.
_PHONE = re.compile(r"\+?\(?\d[\d\s().\-/]{4,}\d")


def fold(text: str) -> str:
    """NFKC + casefold: full-width letters, ligatures and case variants compare equal."""
    return unicodedata.normalize("NFKC", text).casefold()


def words(text: str) -> list[str]:
    """Folded letter/digit runs; all punctuation and whitespace variants act as separators."""
    return _WORD.findall(fold(text))


def skeleton(text: str) -> str:
    """Folded letters and digits only: "Yun-Hwa", "yun hwa" and "YunHwa" share one skeleton."""
    return "".join(words(text))


def digits(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text) if ch.isdigit())


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_BREAK.split(text) if s.strip()]


def normalize_email(email: str) -> str:
    return fold(email).strip().strip(".")


def find_emails(text: str) -> list[str]:
    """E-mail addresses in `text`, including "[at]"/"(dot)" obfuscations, normalised."""
    clear = _OBF_DOT.sub(".", _OBF_AT.sub("@", fold(text)))
    return [normalize_email(m) for m in _EMAIL.findall(clear)]


def find_phone_digits(text: str) -> list[str]:
    """Digit strings of phone-number-like runs in `text` (at least 6 digits)."""
    found = (digits(m) for m in _PHONE.findall(unicodedata.normalize("NFKC", text)))
    return [d for d in found if len(d) >= 6]


def ratio(a: str, b: str) -> float:
    """Character-level similarity in [0, 1]: 2·LCS / (len a + len b), the longest common
    subsequence of characters (rapidfuzz's Indel similarity; difflib's Ratcliff/Obershelp
    ratio, used before, counts only contiguous matching blocks and is never higher)."""
    if not a or not b:
        return 0.0
    return float(Indel.normalized_similarity(a, b))


@functools.lru_cache(maxsize=1 << 16)
def _char_counts(text: str) -> Counter[str]:
    return Counter(text)


def ratio_above(a: str, b: str, floor: float) -> float:
    """`ratio(a, b)` when it is above `floor`, else 0.0.

    Two cheap upper bounds of the ratio come first, the lengths' and the shared characters'
    (an LCS is no longer than the shorter text, nor than the characters both share): most
    pairs of unrelated words are ruled out by them, which is what makes scoring a response
    against hundreds of rules affordable.
    """
    if not a or not b:
        return 0.0
    total = len(a) + len(b)
    if 2.0 * min(len(a), len(b)) / total <= floor:
        return 0.0
    shared = (_char_counts(a) & _char_counts(b)).total()
    if 2.0 * shared / total <= floor:
        return 0.0
    value = float(Indel.normalized_similarity(a, b, score_cutoff=floor))
    return value if value > floor else 0.0


def rescale(value: float, floor: float) -> float:
    """Map [floor, 1] onto [0, 1] and clip: similarities below `floor` are noise, not evidence."""
    if value <= floor:
        return 0.0
    return min(1.0, (value - floor) / (1.0 - floor))


def contains_run(haystack: list[str], needle: list[str]) -> bool:
    """Whether `needle` occurs in `haystack` as a contiguous run, ignoring how words were split.

    Comparing joined windows rather than word lists makes "Yun Hwa", "Yun-Hwa" and "YunHwa" match
    each other whichever side carries the split.
    """
    target = "".join(needle)
    if not target:
        return False
    n = len(needle)
    for size in range(max(1, n - 1), n + 2):
        for start in range(0, len(haystack) - size + 1):
            if "".join(haystack[start : start + size]) == target:
                return True
    return False
