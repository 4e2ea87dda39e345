"""Surface matching of identifiers and key spans in a response (no embeddings here).

Scores are in [0, 1]: 1.0 for an exact match under normalisation, a rescaled fuzzy similarity
otherwise. Each match also returns the surface text it matched, which becomes decoding feedback.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass

from models.generative.keyspans import is_common
from models.generative.normalize import (
    contains_run,
    find_emails,
    find_phone_digits,
    ratio,
    ratio_above,
    rescale,
    words,
)
from models.generative.readings import plain_reading
from models.generative.rules import Rule

_WORD = re.compile(r"[^\W_]+")
# A single part of a multi-word name (surname alone): strong evidence, not certainty, since
# other people share it. Parts shorter than MIN_NAME_PART letters ("Li", "Wu") are too common.
NAME_PART_SCORE = 0.7
MIN_NAME_PART = 4
# Names longer than this are matched in their given word order only (n! orders).
MAX_PERMUTED_WORDS = 4
# Two different 10-digit numbers already share about half their digits in order.
PHONE_FLOOR = 0.7
MIN_PHONE_SUFFIX = 7
# Words this similar count as the same word inside a key span (typos, plural/singular).
WORD_SIMILARITY = 0.85
# Credit for a key span whose words all appear, but not as one run.
SCATTERED_CREDIT = 0.7


@dataclass(frozen=True)
class Word:
    folded: str
    start: int
    end: int


@dataclass(frozen=True)
class Match:
    score: float
    surfaces: tuple[str, ...] = ()


NO_MATCH = Match(0.0)


class Text:
    """A response prepared once for all rules: NFKC text, folded words with their positions,
    and what was already found in it. A conversation is screened with every release of a
    stream, so the caches below spare re-doing its matches on each screen."""

    def __init__(self, raw: str) -> None:
        written = unicodedata.normalize("NFKC", raw)
        plain = plain_reading(written)
        # Read as written and, where it differs, plainly (look-alike letters, digits for
        # letters, words spelled out: models.generative.readings), on a line of its own: a
        # rule that matches either reading matches the text.
        self.raw = written if plain == written else f"{written}\n{plain}"
        self.plain = plain  # whom it names is read here (attribution): not "Pоrt" as a name
        self.words = [
            Word(m.group().casefold(), m.start(), m.end()) for m in _WORD.finditer(self.raw)
        ]
        self.folded = [w.folded for w in self.words]
        self.vocabulary = set(self.folded)
        # Key-span word → whether a similar word occurs here (many rules share words).
        self.similar: dict[str, bool] = {}
        # Key span → its presence here: fact overlap and subject attribution ask for the same
        # spans of the same text.
        self.presence: dict[str, float] = {}
        # (rule, fuzzy floor) → its match here.
        self.matches: dict[tuple[Rule, float], Match] = {}
        # Folded words → whether they occur here as a run (attribution's attributes).
        self.runs: dict[tuple[str, ...], bool] = {}
        # Person mentions (models.generative.attribution), once found.
        self.mentions: list[str] | None = None

    def surface(self, start: int, stop: int) -> str:
        return self.raw[self.words[start].start : self.words[stop - 1].end]


@functools.lru_cache(maxsize=1024)
def _spellings(target: tuple[str, ...]) -> frozenset[str]:
    if len(target) > MAX_PERMUTED_WORDS:
        return frozenset({"".join(target)})
    return frozenset("".join(p) for p in itertools.permutations(target))


def match_name(rule: Rule, text: Text, fuzzy_floor: float) -> Match:
    """Names/aliases: contiguous word windows around the identifier's length.

    Exact: the window spells the identifier once separators are dropped ("Yun-Hwa" = "YunHwa"),
    in any word order ("Yun-Hwa Hsiao"). Fuzzy: the best character
    similarity of a window, in given or sorted word order, or NAME_PART_SCORE for one part of
    the name alone, whichever is higher.
    """
    target = rule.normalized.split()
    joined, ordered = "".join(target), " ".join(sorted(target))
    n = len(target)
    # Every order of the identifier's words, separators dropped: "yunhwa.hsiao" is exact too.
    spellings = _spellings(tuple(target))
    # Similarities at or below the floor rescale to 0, so only those above it are computed.
    best, where = fuzzy_floor, (0, 0)
    for size in range(max(1, n - 1), n + 2):
        for start in range(0, len(text.words) - size + 1):
            window = text.folded[start : start + size]
            if "".join(window) in spellings:
                return Match(1.0, (text.surface(start, start + size),))
            sim = max(
                ratio_above("".join(window), joined, best),
                ratio_above(" ".join(sorted(window)), ordered, best),
            )
            if sim > best:
                best, where = sim, (start, start + size)
    score = rescale(best, fuzzy_floor)
    fuzzy = Match(score, (text.surface(*where),)) if score > 0 else NO_MATCH
    part = _name_part(target, text)
    return part if part.score > fuzzy.score else fuzzy


def _name_part(target: list[str], text: Text) -> Match:
    """One distinctive part of a multi-word name on its own ("Vasquez said…") identifies too."""
    if len(target) < 2:
        return NO_MATCH
    for i, word in enumerate(text.folded):
        if word in target and len(word) >= MIN_NAME_PART and not is_common(word):
            return Match(NAME_PART_SCORE, (text.surface(i, i + 1),))
    return NO_MATCH


def match_email(rule: Rule, text: Text, fuzzy_floor: float) -> Match:
    best, found = 0.0, ""
    for email in find_emails(text.raw):
        if email == rule.normalized:
            return Match(1.0, (email,))
        sim = ratio(email, rule.normalized)
        if sim > best:
            best, found = sim, email
    score = rescale(best, fuzzy_floor)
    return Match(score, (found,)) if score > 0 else NO_MATCH


def match_phone(rule: Rule, text: Text) -> Match:
    target = rule.normalized
    best, found = 0.0, ""
    for number in find_phone_digits(text.raw):
        short, long_ = sorted((number, target), key=len)
        # International vs national form: "+886 2 2345…" vs "02-2345…" (country code on one
        # side, trunk prefix 0 on the other).
        short = short.lstrip("0")
        if number == target or (len(short) >= MIN_PHONE_SUFFIX and long_.endswith(short)):
            return Match(1.0, (number,))
        sim = ratio(number, target)
        if sim > best:
            best, found = sim, number
    score = rescale(best, PHONE_FLOOR)
    return Match(score, (found,)) if score > 0 else NO_MATCH


def match_identifier(rule: Rule, text: Text, fuzzy_floor: float) -> Match:
    key = (rule, fuzzy_floor)
    known = text.matches.get(key)
    if known is None:
        known = text.matches[key] = _match_identifier(rule, text, fuzzy_floor)
    return known


def _match_identifier(rule: Rule, text: Text, fuzzy_floor: float) -> Match:
    if rule.kind == "email":
        return match_email(rule, text, fuzzy_floor)
    if rule.kind == "phone":
        return match_phone(rule, text)
    return match_name(rule, text, fuzzy_floor)


def has_run(text: Text, folded: tuple[str, ...]) -> bool:
    """`contains_run(text.folded, folded)`, remembered on `text`."""
    known = text.runs.get(folded)
    if known is None:
        known = text.runs[folded] = contains_run(text.folded, list(folded))
    return known


@functools.lru_cache(maxsize=1 << 16)
def _similar_words(word: str, other: str) -> bool:
    # Cached: the same pairs of words come back across responses and rules.
    return ratio_above(word, other, WORD_SIMILARITY - 1e-9) > 0.0


def _has_word(word: str, text: Text) -> bool:
    if word in text.vocabulary:
        return True
    if len(word) < 5 or word.isdigit():
        return False
    known = text.similar.get(word)
    if known is None:
        # ratio = 2·matches/(len a + len b) ≤ 2·min/(sum): skip words whose lengths alone
        # rule it out.
        known = any(
            _similar_words(word, other)
            for other in text.vocabulary
            if 2 * min(len(word), len(other)) >= WORD_SIMILARITY * (len(word) + len(other)) - 1e-9
        )
        text.similar[word] = known
    return known


def span_presence(span: str, text: Text) -> float:
    """1.0 when the span occurs as a run of words; partial credit for scattered or fuzzy words."""
    known = text.presence.get(span)
    if known is None:
        known = text.presence[span] = _span_presence(span, text)
    return known


def _span_presence(span: str, text: Text) -> float:
    target = words(span)
    if not target:
        return 0.0
    if contains_run(text.folded, target):
        return 1.0
    # Scattered words: only the uncommon ones count ("the" proves nothing about "The Amber Tide").
    telling = [w for w in target if not is_common(w)] or target
    found = sum(_has_word(w, text) for w in telling)
    return SCATTERED_CREDIT * found / len(telling)


def mask_identifiers(text: str, identifiers: list[str], placeholder: str = "someone") -> str:
    """Replace the subject's names with a neutral word before embedding.

    A sentence embedding is dominated by a rare name: without masking, every sentence about the
    subject looks like every fact about the subject. Masking both sides makes the similarity
    measure the fact's content.
    """
    out = unicodedata.normalize("NFKC", text)
    for ident in sorted(identifiers, key=len, reverse=True):
        parts = words(ident)
        if not parts:
            continue
        body = r"[\W_]*".join(map(re.escape, parts))
        pattern = re.compile(rf"(?<![^\W_]){body}(['’]s)?(?![^\W_])", re.IGNORECASE)
        out = pattern.sub(lambda m: placeholder + (m.group(1) or ""), out)
    return out
