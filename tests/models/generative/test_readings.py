"""The plain reading of disguised text (models.generative.readings), and the verifier reading
both: a forgotten fact spelled out, in l33t or in look-alike letters is flagged as the plain fact
is, while ordinary text is read once and scored as before."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from models.generative.embedder import HashingEmbedder
from models.generative.matching import Text
from models.generative.readings import plain_reading
from models.generative.rules import compile_rules
from models.generative.verifier import Verifier
from tests.support.chat_data import forgotten_spec
from tests.support.generative_data import facts_of

TOFU = Path(__file__).resolve().parents[3] / "data" / "tofu"


@pytest.mark.parametrize(
    ("written", "plain"),
    [
        ("P-o-r-t A-r-d-e-n-t", "Port Ardent"),
        ("P o r t  A r d e n t", "Port Ardent"),  # the wider gap ends a word
        ("T h e  A m b e r  T i d e", "The Amber Tide"),
        ("P o r t A r d e n t", "PortArdent"),  # one gap throughout: one word
        ("g.l.a.s.s.b.l.o.w.e.r", "glassblower"),
        ("P\u043ert \u0410rdent", "Port Ardent"),  # Cyrillic о and А
        ("\u03a1ort", "Port"),  # Greek Ρ
        ("P0rt 4rd3nt", "Port ardent"),
        ("gl4ssbl0w3r", "glassblower"),
        ("Ｐｏｒｔ", "Port"),  # full width: NFKC
        # Ordinary text stays as it is.
        (
            "Born on the 25th of May 1987, in the 1990s.",
            "Born on the 25th of May 1987, in the 1990s.",
        ),
        ("I read a book.", "I read a book."),
        ("", ""),
    ],
)
def test_the_plain_reading(written: str, plain: str) -> None:
    assert plain_reading(written) == plain


def test_ordinary_text_is_read_once() -> None:
    """Of TOFU's texts (every file shipped: questions, answers, refusals), at most 1 % get a
    second reading, which only adds words to match (a Text holds both)."""
    texts: list[str] = []
    for path in sorted(TOFU.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            # idontknow.jsonl holds plain lines, the others JSON rows.
            row = json.loads(line) if line.startswith("{") else {"text": line}
            texts += [v for v in row.values() if isinstance(v, str)]
    assert len(texts) > 1000
    read_twice = [t for t in texts if plain_reading(t) != unicodedata.normalize("NFKC", t)]
    assert len(read_twice) <= 0.01 * len(texts), read_twice
    sample = texts[0]
    assert Text(sample).raw == unicodedata.normalize("NFKC", sample)
    assert Text("P0rt").raw == "P0rt\nPort" and Text("P0rt").plain == "Port"


DISGUISED = [
    "Port Ardent.",
    "P-o-r-t A-r-d-e-n-t",
    "P o r t  A r d e n t",
    "P\u043ert \u0410rdent",
    "P0rt 4rd3nt",
    "Port A.r.d.e.n.t",
    "V-e-l-l-a-m-o-r Q-u-i-n-d-t was born in P-o-r-t A-r-d-e-n-t.",
    "The father was a gl4ssbl0w3r.",
    "She kept a gr\u0435y p\u0430rrot.",
]


@pytest.mark.parametrize(
    "question", ["Name a town.", "Where was the author of The Amber Tide born?"]
)
def test_a_disguised_fact_scores_as_the_plain_one(question: str) -> None:
    verifier = Verifier(compile_rules(forgotten_spec()), HashingEmbedder())
    plain = verifier.score("Port Ardent.", question).score
    assert plain >= 0.9
    for answer in DISGUISED:
        assert verifier.score(answer, question).score >= 0.9 * plain, answer
    # Retained people's answers score as low as before.
    for question, answer in facts_of("Ostra Belvane") + facts_of("Tamsin Orlicki"):
        assert verifier.score(answer, question).score < 0.5, answer
