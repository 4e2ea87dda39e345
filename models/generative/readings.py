"""The plain reading of a text written to slip past word matching.

A model asked to "spell the town letter by letter", "write it in l33t" or "use look-alike
letters" states a forgotten fact in a form no word of it matches: "P-o-r-t A-r-d-e-n-t",
"P0rt 4rd3nt", "Pоrt" with a Cyrillic "о". The verifier reads every text twice, as written
and as `plain_reading` gives it, and a rule matches either (`models.generative.matching.Text`).

- Look-alike letters of other scripts become the Latin letters they imitate (Unicode's
  confusables, TR39, as the confusable-homoglyphs package ships them); NFKC has already
  folded full-width and mathematical letters.
- In a word that mixes letters and digits, digits written for letters become those letters
  ("P0rt" → "Port"); a number alone, or written as one ("25th", "1990s"), stays as it is.
- Three or more single letters in a row become words: the separator used most joins letters,
  any other ends a word ("P-o-r-t A-r-d-e-n-t" and "P o r t  A r d e n t" → "Port Ardent");
  one separator throughout joins them all ("P o r t A r d e n t" → "PortArdent", which the
  matching reads as its words run together).

Encodings that need decoding (reversed text, base64, ciphers) are not read: docs/GUARD_THREATS.md.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from importlib import resources

# Digits and signs written for letters inside a word (the common "leet" substitutions).
_LEET = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s"})  # fmt: skip
_LETTER_RUN = re.compile(r"(?<![^\W_])[^\W\d_](?:[^\w\n]{1,3}[^\W\d_](?![^\W_])){2,}")
_SPELLED_LETTER = re.compile(r"[^\W\d_]")
# Numbers written with letters, which are not leet: "25th", "3rd", "1990s".
_NUMBER_WORD = re.compile(r"\d+(?:st|nd|rd|th|s)", re.IGNORECASE)


@lru_cache(maxsize=1)
def _look_alikes() -> dict[int, str]:
    """Every non-ASCII character whose confusable is an ASCII letter, to that letter."""
    data = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    table: dict[int, str] = {}
    for char, glyphs in json.loads(data).items():
        if len(char) != 1 or char.isascii():
            continue
        latin = next((g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii()
                      and g["c"].isalpha()), None)  # fmt: skip
        if latin is not None:
            table[ord(char)] = latin
    return table


def letters_for_digits(word: str) -> str:
    """`word` with every digit or sign that leet writes for a letter read as that letter, a
    number-like word included ("4rd" → "ard"): for a word cut short, which may be either."""
    return word.translate(_LEET)


def _unleet(match: re.Match[str]) -> str:
    word = match.group()
    letters = sum(c.isalpha() for c in word)
    if not letters or letters == len(word) or _NUMBER_WORD.fullmatch(word):
        return word
    return word.translate(_LEET)


def _joined(match: re.Match[str]) -> str:
    """The letters of a spelled-out run as words: the separator used most joins letters, any
    other one ends a word ("T h e  A m b e r", "P-o-r-t A-r-d-e-n-t")."""
    run = match.group()
    letters: list[str] = _SPELLED_LETTER.findall(run)
    gaps = _SPELLED_LETTER.split(run)[1:-1]
    inside = Counter(gaps).most_common(1)[0][0]
    out = letters[0]
    for gap, letter in zip(gaps, letters[1:], strict=True):
        out += letter if gap == inside else " " + letter
    return out


def plain_reading(text: str) -> str:
    """`text` with look-alike letters, digits for letters and spelled-out words read plainly
    (the module docstring); the text itself when there is nothing to read."""
    plain = unicodedata.normalize("NFKC", text).translate(_look_alikes())
    plain = re.sub(r"[\w@$]+", _unleet, plain)
    return _LETTER_RUN.sub(_joined, plain)
