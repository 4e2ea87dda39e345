"""ROUGE-L from `rouge-score` and fuzzy similarity from `rapidfuzz` replace hand-written code:
the results are the same (ROUGE-L) or better (name similarity), checked against the code they
replace, kept here as the reference."""

from __future__ import annotations

from difflib import SequenceMatcher
from itertools import combinations

import pytest
from rouge_score import rouge_scorer

from models.generative.embedder import HashingEmbedder
from models.generative.normalize import ratio, ratio_above, words
from models.generative.probes import rouge_l_recall
from models.generative.rules import ForgetSpec, compile_rules
from models.generative.verifier import Verifier
from tests.support.chat_data import training_pairs
from tests.support.generative_data import ALL_PAIRS, PEOPLE


def lcs_recall(candidate: str, reference: str) -> float:
    """The hand-written ROUGE-L recall lethe used before (LCS over folded words)."""
    cand, ref = words(candidate), words(reference)
    if not cand or not ref:
        return 0.0
    previous = [0] * (len(cand) + 1)
    for r in ref:
        current = [0]
        for j, c in enumerate(cand, start=1):
            current.append(previous[j - 1] + 1 if r == c else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1] / len(ref)


def difflib_ratio(a: str, b: str) -> float:
    return SequenceMatcher(None, a, b, autojunk=False).ratio() if a and b else 0.0


def _texts() -> list[str]:
    texts = [t for q, a in ALL_PAIRS for t in (q, a)]
    texts += [a for _, a in training_pairs()]
    texts += ["Hsiao Yun-Hwa", "Beltrão nació en São Paulo.", "Ｆｕｌｌ ｗｉｄｔｈ", "", "..."]
    return texts


def test_rouge_l_is_the_same_as_the_hand_written_one() -> None:
    texts = _texts()
    pairs = [(a, b) for a in texts[:40] for b in texts[:40]] + list(combinations(texts, 2))
    for candidate, reference in pairs:
        assert rouge_l_recall(candidate, reference) == pytest.approx(
            lcs_recall(candidate, reference)
        ), (candidate, reference)


def test_rouge_l_keeps_letters_rouge_scores_default_tokenizer_drops() -> None:
    default = rouge_scorer.RougeScorer(["rougeL"])
    # The default tokenizer keeps a-z and 0-9 only: "Beltrão" becomes "beltr" and "o".
    a, b = "Beltrão nació en São Paulo.", "Beltrão was born in Lisbon."
    assert default.score(b, a)["rougeL"].recall > 0
    assert rouge_l_recall(a, b) == pytest.approx(1 / 5)  # "beltrão" only
    assert rouge_l_recall("Müller", "MÜLLER") == 1.0


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
