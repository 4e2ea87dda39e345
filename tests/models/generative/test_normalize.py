"""Text normalisation: case, width and punctuation fold away."""

from __future__ import annotations

from difflib import SequenceMatcher
from itertools import combinations

import pytest

from models.generative.embedder import HashingEmbedder
from models.generative.normalize import (
    find_emails,
    find_phone_digits,
    ratio,
    ratio_above,
    skeleton,
    words,
)
from models.generative.rules import ForgetSpec, compile_rules
from models.generative.verifier import Verifier
from tests.support.generative_data import PEOPLE


def test_normalisation_folds_case_width_and_punctuation() -> None:
    assert words("ＨＳＩＡＯ  Yun-Hwa!") == ["hsiao", "yun", "hwa"]
    assert skeleton("Yun-Hwa") == skeleton("yun hwa") == skeleton("YUNHWA")
    assert find_emails("mail jane.doe [at] example [dot] org now") == ["jane.doe@example.org"]
    assert find_emails("Write to A.B@X.ORG.") == ["a.b@x.org"]
    assert find_phone_digits("call (02) 2345-6789 or 12") == ["0223456789"]


# Fuzzy similarity from rapidfuzz replaced difflib's: never lower, checked against it.


def difflib_ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio() if a and b else 0.0


MISSPELT = [
    ("rajeev majumdar", "rajeev majumdde"),
    ("vellamor quindt", "velamor quint"),
    ("anara yusifova", "anara yusifovovic"),
    ("aurelio beltran", "aurelio beltrão"),
    ("hsiao yun hwa", "hsiao yunhwa"),
    ("adib jarrah", "adib jarrill"),
]


def test_similarity_is_never_lower_than_difflibs() -> None:
    """An LCS of characters is at least as long as Ratcliff/Obershelp's matching blocks: every
    misspelling the old ratio found, the new one finds, at least as strongly."""
    names = [" ".join(words(n)) for n in PEOPLE] + [a for pair in MISSPELT for a in pair]
    for a, b in [*MISSPELT, *combinations(names, 2)]:
        assert ratio(a, b) >= difflib_ratio(a, b) - 1e-12, (a, b)
        for floor in (0.5, 0.7, 0.85):
            expected = ratio(a, b) if ratio(a, b) > floor else 0.0
            assert ratio_above(a, b, floor) == pytest.approx(expected)


def test_misspelt_names_are_found_and_other_people_are_not() -> None:
    """Through the verifier: each misspelling scores at least as high as with difflib, and no
    other person's name scores as the forgotten one's."""
    for right, wrong in MISSPELT:
        verifier = Verifier(compile_rules(ForgetSpec([right.title()])), HashingEmbedder())
        assert verifier.score(f"The author is {wrong.title()}.").score >= 0.5, wrong
    others = list(PEOPLE)
    for name in others:
        verifier = Verifier(compile_rules(ForgetSpec([name])), HashingEmbedder())
        for other in others:
            if other != name:
                assert verifier.score(f"The author is {other}.").score < 0.5, (name, other)
