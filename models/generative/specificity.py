"""How specific a piece of text is: word frequency (wordfreq's Zipf scale) turned into a weight.

A key span that most English text contains ("father", "leadership") proves little when it
appears; a rare one ("Taipei", "paramedic", a date) proves much. Weights scale the evidence a
span contributes, so generic words cannot fire a fact rule on their own. wordfreq's word lists
ship inside its wheel: nothing is downloaded at run time.
"""

from __future__ import annotations

import functools

from wordfreq import zipf_frequency

# Zipf = log10(occurrences per billion words) + ... : "the" ≈ 7.7, "father" ≈ 5.3,
# "engineer" ≈ 4.5, "Taipei" ≈ 3.3. At or above COMMON_ZIPF a span carries almost no evidence;
# at or below RARE_ZIPF (and for words wordfreq does not know) it carries full weight.
COMMON_ZIPF = 6.0
RARE_ZIPF = 3.5
MIN_WEIGHT = 0.05
# Numbers with at least this many digits (a year) carry full weight.
DIGITS_FOR_FULL_WEIGHT = 4
# A word at least this frequent is too common to identify anything on its own.
COMMON_WORD_ZIPF = 5.0


@functools.lru_cache(maxsize=1 << 16)
def zipf(text: str) -> float:
    """Zipf frequency of `text` in English (0.0 when unknown); multi-word text is rarer than
    its rarest word (wordfreq combines 1/f over the words)."""
    return float(zipf_frequency(text, "en"))


@functools.lru_cache(maxsize=1 << 16)
def span_weight(span: str) -> float:
    """Evidence weight in [MIN_WEIGHT, 1] of finding `span` in a text."""
    digits = sum(ch.isdigit() for ch in span)
    if digits:
        # Dates, years, numbers: wordfreq buckets digits together, which says nothing about
        # how specific "05/11/1991" is. Each digit narrows the value tenfold: a year or a
        # date is as specific as facts get, a lone "1" ("#1") is not.
        return max(MIN_WEIGHT, min(1.0, digits / DIGITS_FOR_FULL_WEIGHT))
    z = zipf(span)
    if z <= RARE_ZIPF:
        return 1.0
    scaled = (COMMON_ZIPF - z) / (COMMON_ZIPF - RARE_ZIPF)
    return max(MIN_WEIGHT, min(1.0, scaled))


def is_frequent(word: str) -> bool:
    """Whether a single (folded) word is among the very common words of English."""
    return zipf(word) >= COMMON_WORD_ZIPF
