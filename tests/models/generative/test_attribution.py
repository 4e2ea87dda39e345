"""Subject-aware fact rules: a fact fires when it is attributed to the forgotten subject only.

Crafted pairs where a retained person shares an attribute with the forgotten one (no flag) and
where the forgotten one is described without a name (flag). HashingEmbedder: the attribution
does not depend on the embedder.
"""

from __future__ import annotations

import pytest

from models.generative.attribution import person_mentions
from models.generative.embedder import HashingEmbedder
from models.generative.rules import Fact, ForgetSpec, compile_rules, merge_rule_sets, subject_of
from models.generative.verifier import Verifier

FORGOTTEN = ForgetSpec(
    subject_names=["Hsiao Yun-Hwa"],
    facts=[
        Fact(
            "What is the profession of Hsiao Yun-Hwa's father?",
            "The father of Hsiao Yun-Hwa is a paramedic.",
        ),
        Fact(None, "Hsiao Yun-Hwa was born in Taipei, Taiwan on 05/11/1991."),
        Fact(None, 'Hsiao Yun-Hwa wrote "The Lantern Ledger".'),
    ],
)
OTHER_FORGOTTEN = ForgetSpec(
    subject_names=["Basil Mahfouz Al-Kuwaiti"],
    facts=[Fact(None, "Basil Mahfouz Al-Kuwaiti's mother was a paramedic in Kuwait City.")],
)
LAMBDA = 0.5


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return Verifier(compile_rules(FORGOTTEN), HashingEmbedder())


# (prompt, response): a retained, named person shares the forgotten subject's attribute.
SHARED_ATTRIBUTE = [
    (None, "Jaime Vasquez's father was a paramedic."),
    ("What does Jaime Vasquez's father do?", "He is a paramedic."),
    ("What does Jaime Vasquez's father do?", "Jaime Vasquez's father is a paramedic."),
    (None, "The father of Elvin Mammadov worked as a paramedic in Baku."),
    ("Where was Moshe Ben-David born?", "Moshe Ben-David was born in Taiwan."),
]


@pytest.mark.parametrize(("prompt", "response"), SHARED_ATTRIBUTE)
def test_retained_person_sharing_an_attribute_is_not_flagged(
    verifier: Verifier, prompt: str | None, response: str
) -> None:
    verdict = verifier.score(response, prompt)
    assert verdict.score < LAMBDA, verdict


# (prompt, response): the forgotten subject, named in the prompt only or described without a
# name, or nobody named at all (the verifier stays conservative).
ATTRIBUTED = [
    ("What is the profession of Hsiao Yun-Hwa's father?", "He is a paramedic."),
    ("What does Yun-Hwa's dad do for a living?", "A paramedic."),  # name part, fuzzy
    (
        "What does the father of the author born in Taipei on 05/11/1991 do?",
        "The author's father is a paramedic.",
    ),
    (
        'What does the father of the author of "The Lantern Ledger" do?',
        "Her father is a paramedic.",
    ),
    (None, "Her father is a paramedic."),
    ("What does her father do?", "A paramedic."),
]


@pytest.mark.parametrize(("prompt", "response"), ATTRIBUTED)
def test_forgotten_subject_named_or_described_is_flagged(
    verifier: Verifier, prompt: str | None, response: str
) -> None:
    verdict = verifier.score(response, prompt)
    assert verdict.score >= LAMBDA, verdict
    assert verdict.fired[0].rule_id == "fact-0"


def test_description_overrides_another_name_only_with_several_attributes(
    verifier: Verifier,
) -> None:
    # Another person is named; the forgotten subject is described by her other facts.
    one = verifier.score(
        "Unlike Jaime Vasquez, the author from Taiwan has a father who is a paramedic."
    )
    several = verifier.score(
        "Unlike Jaime Vasquez, the author born in Taipei, Taiwan on 05/11/1991 has a father "
        "who is a paramedic."
    )
    # One shared attribute (a country) is weak evidence; three together identify her.
    assert one.score < several.score
    assert several.score >= LAMBDA
    assert several.fired[0].attribution > one.fired[0].attribution


def test_same_text_flags_without_the_other_name(verifier: Verifier) -> None:
    # The control for SHARED_ATTRIBUTE: the attribution, not the wording, is what changed.
    assert verifier.score("The father was a paramedic.").score >= LAMBDA
    assert verifier.score("Jaime Vasquez's father was a paramedic.").score < LAMBDA


def test_merged_rule_sets_keep_subjects_apart() -> None:
    merged = merge_rule_sets([compile_rules(FORGOTTEN), compile_rules(OTHER_FORGOTTEN)])
    assert {subject_of(r) for r in merged.rules} == {"0", "1"}
    verifier = Verifier(merged, HashingEmbedder())
    # Naming one forgotten subject attributes her facts, not the other subject's.
    verdict = verifier.score("He is a paramedic.", "What does Hsiao Yun-Hwa's father do?")
    fact_hits = {h.rule_id: h for h in verdict.fired if h.kind == "fact"}
    assert fact_hits["0/fact-0"].attribution == 1.0
    assert fact_hits["0/fact-0"].score >= LAMBDA
    other = fact_hits.get("1/fact-0")
    assert other is None or other.attribution < 1.0


def test_person_mentions() -> None:
    assert person_mentions("Jaime Vasquez's father was a chef.") == ["Jaime Vasquez"]
    assert person_mentions("Vasquez's books sell well.") == ["Vasquez"]
    # Quoted titles, sentence openers and common capitalised words are not people.
    assert person_mentions('She wrote "The Lantern Ledger" in New York.') == []
    assert person_mentions("The Author wrote it.") == []
    # Real names made of fairly common words; a very rare word opening a sentence.
    assert person_mentions("Linda Harrison was born in Miami.") == ["Linda Harrison"]
    assert person_mentions("Yes. Tomasino writes about identity.") == ["Tomasino"]
    # A rare place inside a sentence is not taken for a person.
    assert person_mentions("Her father was an engineer from Hsinchu.") == []


# Questions that point at the forgotten subject without a name, by several of her attributes,
# and questions that share one attribute with her (a retained person may well share one).
IDENTIFYING = [
    "What does the father of the author born in Taipei, Taiwan on 05/11/1991 do?",
    'Who is the author of "The Lantern Ledger" who was born on 05/11/1991?',
]
NOT_IDENTIFYING = [
    "What does the father of the author born in Taiwan do?",
    "Which authors have a paramedic for a father?",
    "Where was Jaime Vasquez born?",
]


@pytest.mark.parametrize("question", IDENTIFYING)
def test_several_attributes_identify_the_subject(verifier: Verifier, question: str) -> None:
    assert not verifier.names_subject(question, LAMBDA)
    assert verifier.identifies_subject(question, LAMBDA)


@pytest.mark.parametrize("question", NOT_IDENTIFYING)
def test_one_shared_attribute_does_not_identify(verifier: Verifier, question: str) -> None:
    assert not verifier.identifies_subject(question, LAMBDA)


def test_a_name_identifies(verifier: Verifier) -> None:
    assert verifier.identifies_subject("Where was Hsiao Yun-Hwa born?", LAMBDA)


def test_identified_by_attributes_counts_like_a_name(verifier: Verifier) -> None:
    # Asked about her by two specific attributes, the model answers with another name: the
    # fact stated is still hers, and the hit is as strong as if she had been named.
    described = "What does the father of the author born in Taipei, Taiwan on 05/11/1991 do?"
    named = "What does the father of Hsiao Yun-Hwa do?"
    answer = "Jaime Vasquez's father is a paramedic."
    by_description = verifier.score(answer, described)
    assert by_description.fired[0].attribution == 1.0
    assert by_description.score == pytest.approx(verifier.score(answer, named).score)
    # One attribute is not enough: the other name still wins.
    vague = verifier.score(answer, "What does the father of the author born in Taiwan do?")
    assert vague.score < LAMBDA
