"""Derive the key spans of a fact: the short pieces of text whose presence reveals it.

Used when a DPO files a fact without naming its key spans. The heuristic keeps proper names
(capitalised words not at a sentence start, and capitalised multi-word runs), numbers and dates,
and content words that are not common English; adjacent kept words merge into one span so that
"civil engineer" stays a single span rather than two generic words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from models.generative.normalize import skeleton
from models.generative.specificity import is_frequent, span_weight

_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"
_DATE = (
    r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}"
    r"|\d{4}-\d{2}-\d{2}"
    r"|\d+(?:st|nd|rd|th)\b"
)
# A date, a word (keeping inner hyphens/apostrophes/"+"), or one punctuation mark.
_TOKEN = re.compile(rf"{_DATE}|[^\W_][\w'’+\-]*|[^\w\s]", re.IGNORECASE)
_SENTENCE_END = {".", "!", "?", ":", ";", '"', "“", "”"}
# Lower-case words allowed inside a capitalised run ("University of Chile", "Jean de la Croix").
_CONNECTORS = {"of", "de", "del", "la", "le", "van", "von", "der", "da", "di", "du", "bin", "al"}
# Common English and words generic to author biographies: never key spans on their own.
_COMMON_WORDS = """
    a about above after again against all also although always am among an and another any are
    around as at away back be became because become becomes been before being below best better
    between both but by came can could did do does doing done down during each early either else
    even ever every few first for from full further gave get gets give given go going good got great
    had has have having he her here hers herself him himself his how however i if in into is it its
    itself just known know large last later least less like made make makes many may me more most
    much must my myself name named never new next no nor not now of off often on once one only or
    other others our ours out over own part people person place quite rather really said same see
    seen several she should since so some still such than that the their theirs them themselves
    then there these they thing things this those though through throughout thus time to together
    too toward towards under until up upon us used very was way we well were what when where which
    while who whom whose why will with within without would year years yes yet you your yours
    author authors writer writers writing write writes wrote written book books novel novels work
    works genre genres story stories literary literature field career life world published
    publishing readers reader style themes theme known famous notable renowned celebrated acclaimed
    award awards received receive winning won honor honour father mother parents parent family born
    birth profession job occupation identify identifies community background influence influenced
    inspired inspiration including include includes various different often unique deep deeply
    significant significantly particular particularly especially notably many much several within
    help helped helps shape shaped important interest interests specific specifically yes indeed
    question answer answers related regarding based kind sort
    keep keeps kept lived lives live living worked working moved move went spent grew grown
    called call took take taken came come got made raised married died dies began begun
"""
_COMMON = frozenset(_COMMON_WORDS.split())
_MIN_CONTENT_LEN = 4


def _is_number(token: str) -> bool:
    return any(ch.isdigit() for ch in token)


_MONTH = re.compile(_MONTHS, re.IGNORECASE)
_POSSESSIVE = re.compile(r"['’]s$")


def _is_month(token: str) -> bool:
    return _MONTH.fullmatch(token) is not None


def _strip_possessive(span: str) -> str:
    return _POSSESSIVE.sub("", span)


def is_common(word: str) -> bool:
    """Whether a (folded) word is too common to identify anything on its own: generic to
    biographies (the list above) or very frequent in English at large (wordfreq)."""
    return word in _COMMON or is_frequent(word)


def _stem(word: str) -> str:
    """Crude suffix stripping, enough to see that "engineers" echoes "engineer"."""
    low = word.casefold()
    for suffix in ("ing", "ed", "es", "s"):
        if low.endswith(suffix) and len(low) - len(suffix) >= 3:
            return low[: -len(suffix)]
    return low


def _kind(token: str, next_token: str, sentence_start: bool) -> str | None:
    """Why a token would be kept: "proper", "number" or "content"; None when it is not."""
    bare = _strip_possessive(token)
    if _is_number(bare) or _is_month(bare):
        return "number"
    if bare[0].isupper():
        if not sentence_start:
            return "proper"
        # A sentence-initial capital only counts when a capitalised run follows it.
        follows = next_token[:1].isalpha() and next_token[:1].isupper()
        return "proper" if follows and bare.casefold() not in _COMMON else None
    # Adverbs ("greatly", "strongly") carry manner, not the fact.
    low = bare.casefold()
    if len(bare) >= _MIN_CONTENT_LEN and not is_common(low) and not low.endswith("ly"):
        return "content"
    return None


def derive_key_spans(
    text: str, exclude: Iterable[str] = (), question: str | None = None, max_content: int = 4
) -> list[str]:
    """Key spans of `text`, in order of appearance, without duplicates.

    Spans whose skeleton lies inside one of `exclude` (the subject's names, already covered by
    identifier rules) are dropped, unless nothing else would remain. Content words that echo the
    `question` ("What animals did X keep?" → "kept") add nothing the question did not already
    say, and are not key. Long answers have many
    content words; only the `max_content` most specific content spans are kept (rarest by
    wordfreq first, longer first among equals).
    """
    tokens = _TOKEN.findall(text)
    echoed = {_stem(t) for t in _TOKEN.findall(question or "")}
    kinds: list[str | None] = [None] * len(tokens)
    sentence_start = True
    for i, tok in enumerate(tokens):
        if not tok[0].isalnum():
            sentence_start = tok in _SENTENCE_END
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        kind = _kind(tok, nxt, sentence_start)
        kinds[i] = None if kind == "content" and _stem(tok) in echoed else kind
        sentence_start = False
    # A connector between two kept words of one kind joins them ("25th of February").
    for i in range(1, len(tokens) - 1):
        if tokens[i].casefold() in _CONNECTORS and kinds[i - 1] and kinds[i - 1] == kinds[i + 1]:
            kinds[i] = kinds[i - 1]

    spans: list[tuple[str, str]] = []
    run: list[str] = []
    run_kind: str | None = None
    for tok, kind in [*zip(tokens, kinds, strict=True), ("", None)]:
        if run and (kind != run_kind or _strip_possessive(run[-1]) != run[-1]):
            # A possessive ends a span: "Hsiao Yun-Hwa's father" is a name, then a word.
            assert run_kind is not None
            spans.append((run_kind, _strip_possessive(" ".join(run))))
            run = []
        if kind:
            run.append(tok)
        run_kind = kind

    content = sorted(
        (s for k, s in spans if k == "content"),
        key=lambda s: (-span_weight(s), -len(s.split()), -len(s)),
    )[:max_content]
    ordered = [s for k, s in spans if k != "content" or s in content]

    seen: set[str] = set()
    unique = []
    for span in ordered:
        key = skeleton(span)
        if key and key not in seen:
            seen.add(key)
            unique.append(span)

    excluded = [e for e in map(skeleton, exclude) if e]
    kept = [s for s in unique if not any(skeleton(s) in e for e in excluded)]
    return kept or unique
