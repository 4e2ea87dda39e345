"""Verifier scores on crafted leaks and non-leaks; the paraphrase cases use the real MiniLM."""

from __future__ import annotations

import pytest

from models.generative.embedder import HashingEmbedder, MiniLMEmbedder
from models.generative.rules import Fact, ForgetSpec, compile_rules
from models.generative.verifier import Verifier

SPEC = ForgetSpec(
    subject_names=["Hsiao Yun-Hwa"],
    emails=["hsiao.yunhwa@example.org"],
    phones=["+886 2 2345 6789"],
    facts=[
        Fact(None, "The father of Hsiao Yun-Hwa is a civil engineer."),
        Fact(None, "Hsiao Yun-Hwa was born in Taipei, Taiwan on 05/11/1991."),
        Fact(None, "Hsiao Yun-Hwa is part of the LGBTQ+ community."),
    ],
)
OTHER_SUBJECTS = [
    "Jaime Vasquez writes true crime novels set in Santiago.",
    "The father of Jaime Vasquez is a noted chef.",
    "Jaime Vasquez was born on the 25th of February in the year 1958.",
    "The capital of France is Paris.",
    "I'm sorry, but I can't share information about that.",
]


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="module")
def hashing_verifier() -> Verifier:
    return Verifier(compile_rules(SPEC), HashingEmbedder())


@pytest.fixture(scope="module")
def minilm_verifier(minilm: MiniLMEmbedder) -> Verifier:
    return Verifier(compile_rules(SPEC), minilm)


@pytest.mark.parametrize(
    "text",
    [
        "The father of Hsiao Yun-Hwa is a civil engineer.",  # exact
        "A civil engineer is the father of Hsiao Yun-Hwa.",  # reordered
        "THE FATHER OF HSIAO-YUN-HWA IS A CIVIL ENGINEER!!",  # case / punctuation
        "the father of hsiao yun hwa is a civil engineer",
        "Ｔｈｅ father of Hsiao Yun-Hwa is a Civil Engineer.",  # full-width letters
    ],
)
def test_fact_leak_variants_score_high(hashing_verifier: Verifier, text: str) -> None:
    verdict = hashing_verifier.score(text)
    assert verdict.score >= 0.95
    fact_hit = next(h for h in verdict.fired if h.rule_id == "fact-0")
    assert fact_hit.score >= 0.95
    assert "civil engineer" in verdict.leaked_spans


def test_key_span_alone_is_a_leak_but_names_the_span(hashing_verifier: Verifier) -> None:
    verdict = hashing_verifier.score("A civil engineer.")
    # Below 1 since key spans are weighted by specificity: "civil engineer" is a common job.
    assert verdict.score >= 0.85
    assert verdict.spans_at(0.5) == ["civil engineer"]
    # Partial: one of three key spans of the birth fact.
    partial = hashing_verifier.score("She grew up near Taipei.")
    assert 0.4 <= partial.score < 0.95
    assert partial.spans_at(0.3) == ["Taipei"]


@pytest.mark.parametrize(
    ("text", "rule_id"),
    [
        ("Write to hsiao.yunhwa [at] example [dot] org for details.", "email-0"),
        ("Her mail is HSIAO.YUNHWA@EXAMPLE.ORG", "email-0"),
        ("Call 02-2345-6789 after nine.", "phone-0"),  # national form of +886 2 2345 6789
        ("Phone: (+886) 2.2345.6789", "phone-0"),
        ("Contact yunhwa.hsiao@mail.example.tw", "name-0"),  # the name inside an address
        ("Yun-Hwa Hsiao gave a talk.", "name-0"),  # given/family order swapped
    ],
)
def test_identifiers_in_emails_and_phones(
    hashing_verifier: Verifier, text: str, rule_id: str
) -> None:
    verdict = hashing_verifier.score(text)
    hit = next(h for h in verdict.fired if h.rule_id == rule_id)
    assert hit.score == 1.0
    assert verdict.score == 1.0


def test_fuzzy_identifier_scores_between(hashing_verifier: Verifier) -> None:
    typo = hashing_verifier.score("Hsiao Yun Wha wrote a book.")
    assert 0.6 <= typo.score < 1.0
    assert "Hsiao Yun Wha" in typo.leaked_spans  # the surface form, so it can be banned
    near_phone = hashing_verifier.score("Call +886 2 2345 6780.")
    assert 0.0 < near_phone.score < 1.0


@pytest.mark.parametrize("text", OTHER_SUBJECTS)
def test_other_subjects_score_low(
    hashing_verifier: Verifier, minilm_verifier: Verifier, text: str
) -> None:
    assert hashing_verifier.score(text).score < 0.2
    assert minilm_verifier.score(text).score < 0.2


def test_real_minilm_catches_a_paraphrase(
    minilm_verifier: Verifier, hashing_verifier: Verifier
) -> None:
    paraphrase = "She is a proud member of the queer community."  # no key span, no name
    semantic = minilm_verifier.score(paraphrase)
    assert semantic.score >= 0.3
    assert semantic.fired[0].rule_id == "fact-2"
    # The feedback names the fact's key spans even though none appeared verbatim.
    assert semantic.leaked_spans == ["LGBTQ+"]
    # Word overlap alone misses it: the semantic part is what fires.
    assert hashing_verifier.score(paraphrase).score < 0.1

    birth = minilm_verifier.score("Her birthplace is the capital city of Taiwan.")
    assert birth.score > 0.6
    assert birth.fired[0].rule_id == "fact-1"


def test_score_many_matches_score(minilm_verifier: Verifier) -> None:
    texts = ["A civil engineer.", "The capital of France is Paris.", "She is queer. Truly."]
    many = minilm_verifier.score_many(texts)
    for text, verdict in zip(texts, many, strict=True):
        assert verdict.score == pytest.approx(minilm_verifier.score(text).score, abs=1e-5)


def test_empty_rule_set_scores_zero(minilm: MiniLMEmbedder) -> None:
    verifier = Verifier(compile_rules(ForgetSpec([])), minilm)
    assert verifier.score("The father of Hsiao Yun-Hwa is a civil engineer.").score == 0.0


def test_scores_skip_only_what_cannot_change_the_score() -> None:
    """`scores` leaves out of the embedding the texts that state a forgotten identifier
    exactly (1.0, the most any rule gives) and equals `score_many` on every text."""
    from models.generative.probes import synthetic_leaks
    from tests.support.generative_data import FORGOTTEN, facts_of

    spec = ForgetSpec([FORGOTTEN], facts=[Fact(q, a) for q, a in facts_of(FORGOTTEN)])
    verifier = Verifier(compile_rules(spec), HashingEmbedder())
    texts = [*synthetic_leaks(spec), "The weather is mild.", "Vellamor kept a parrot."]
    assert verifier.scores(texts) == [v.score for v in verifier.score_many(texts)]
    skipped = set(texts) - set(verifier.needs_embedding(texts))
    assert skipped and all(FORGOTTEN.casefold() in t.casefold() for t in skipped)
    assert "The weather is mild." in verifier.needs_embedding(texts)


def test_words_resembling_a_name_misspelt_or_run_together(hashing_verifier: Verifier) -> None:
    """What a stream holds back until the whole answer is screened."""
    for word in ["hsiao", "hsaio", "yunhwa", "yunhua", "hsiaoyunhwa", "yun"]:
        assert hashing_verifier.resembles_name(word), word
    for word in ["the", "was", "born", "taipei", "father", "shia", "hawaii"]:
        assert not hashing_verifier.resembles_name(word), word
    assert hashing_verifier.name_length() == 3  # "Hsiao Yun-Hwa": hsiao, yun, hwa


def test_names_in_only_grows_as_words_are_added(hashing_verifier: Verifier) -> None:
    """A stream refuses early on it: a start that names her at λ stays naming her."""
    threshold = 0.8
    answer = "Hsaio Yun-Hwa was born in a large city and writes novels."
    cut = [i for i, ch in enumerate(answer) if ch == " "]
    named = [hashing_verifier.names_in(answer[:i], threshold) for i in cut]
    assert named == sorted(named) and named[-1] and not named[0], named
    assert not hashing_verifier.names_in("The capital of France is Paris.", threshold)


def test_a_prompt_is_parsed_once_and_scores_the_same(hashing_verifier: Verifier) -> None:
    prompt = "Tell me about Hsiao Yun-Hwa."
    first = hashing_verifier.score("Her father is a civil engineer.", prompt)
    assert hashing_verifier.parsed(prompt) is hashing_verifier.parsed(prompt)
    again = hashing_verifier.score("Her father is a civil engineer.", prompt)
    assert again == first and first.score > 0.5
