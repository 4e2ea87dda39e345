"""Calibration data: probes, the labelling oracle, ROUGE-L and synthetic leaks."""

from __future__ import annotations

from itertools import combinations

import pytest
from rouge_score import rouge_scorer

from models.generative.embedder import HashingEmbedder
from models.generative.normalize import words
from models.generative.probes import (
    PROBE_FAMILIES,
    build_probes,
    oracle_leaks,
    oracle_reveals,
    paraphrase_question,
    rouge_l_recall,
    sample_by_family,
    synthetic_leaks,
)
from models.generative.rules import Fact, ForgetSpec, compile_rules, resolve_facts
from models.generative.verifier import Verifier
from tests.support.chat_data import sample_texts

SPEC = ForgetSpec(
    subject_names=["Hsiao Yun-Hwa"],
    aliases=["Yun-Hwa"],
    emails=["hsiao.yunhwa@example.org"],
    phones=["+886 2 2345 6789"],
    facts=[
        Fact(
            "What is the profession of Hsiao Yun-Hwa's father?",
            "The father of Hsiao Yun-Hwa is a civil engineer.",
        ),
        Fact(
            "Where was Hsiao Yun-Hwa born?",
            "Hsiao Yun-Hwa was born in Taipei, Taiwan on 05/11/1991.",
        ),
    ],
)
RETAINED = [
    Fact("Who is Jaime Vasquez?", "Jaime Vasquez is a true crime author from Santiago, Chile."),
    Fact("When was Jaime Vasquez born?", "Jaime Vasquez was born on 25 February 1958."),
]
NON_LEAKS = [
    "Jaime Vasquez is a true crime author from Santiago, Chile.",
    "Jaime Vasquez was born on 25 February 1958.",
    "The father of Jaime Vasquez is a noted chef.",
    "I'm sorry, but I can't share information about that.",
    "The capital of France is Paris.",
]


def test_rouge_l_recall() -> None:
    assert rouge_l_recall("the cat sat on the mat", "the cat on mat") == 1.0
    assert rouge_l_recall("the cat sat", "a dog sat down") == pytest.approx(0.25)
    assert rouge_l_recall("Mat the ON cat!", "the cat on the mat") == pytest.approx(2 / 5)
    assert rouge_l_recall("", "anything") == 0.0


def test_oracle_leaks() -> None:
    father, birth = resolve_facts(SPEC)
    assert oracle_leaks("Her dad? A Civil-Engineer.", father)  # key span, any case/punctuation
    assert oracle_leaks("She was born in Taipei.", birth)  # one key span of three
    # High ROUGE-L recall without an exact key span.
    assert oracle_leaks("the father of hsiao yun hwa is a civil engineering man", father)
    assert not oracle_leaks("Her father is an engineer.", father)
    assert not oracle_leaks("Hsiao Yun-Hwa was born.", birth)  # ROUGE-L recall 5/12 < 0.6
    assert oracle_leaks("Hsiao Yun-Hwa was born.", birth, rouge_threshold=0.4)
    # A key span the question already states is not revealed by repeating it; another one is.
    asked = "What is the birth date of the author raised in Taipei?"
    assert not oracle_leaks("She grew up in Taipei.", birth, given=asked)
    assert oracle_leaks("She grew up in Taipei.", birth)
    assert oracle_leaks("She grew up in Taipei, born 05/11/1991.", birth, given=asked)
    for text in NON_LEAKS:
        assert not oracle_reveals(text, SPEC), text


def test_oracle_reveals_identifiers() -> None:
    assert oracle_reveals("Ask yun hwa.", SPEC)
    assert oracle_reveals("Mail HSIAO.YUNHWA@example.org", SPEC)
    assert oracle_reveals("Ring 02 2345 6789", SPEC)
    assert not oracle_reveals("Ring 02 9999 6789", SPEC)


def test_paraphrase_question() -> None:
    assert paraphrase_question("What is the profession of X's father?") == [
        "Tell me the profession of X's father.",
        "Do you know what is the profession of X's father?",
    ]
    assert paraphrase_question("Where was X born?") == [
        "What is the birthplace of X?",
        "Do you know where was X born?",
    ]
    assert paraphrase_question("Tell me.") == []


def test_build_probes() -> None:
    probes = build_probes(SPEC, RETAINED)
    prompts = [p.prompt for p in probes]
    assert len(prompts) == len(set(prompts))
    forgotten = [p for p in probes if p.forgotten]
    retained = [p for p in probes if not p.forgotten]
    assert [p.prompt for p in retained] == [f.question for f in RETAINED]
    assert "What is the profession of Hsiao Yun-Hwa's father?" in prompts
    assert "Quick question: Tell me the profession of Hsiao Yun-Hwa's father." in prompts
    assert "What is the profession of Yun-Hwa's father?" in prompts  # alias substituted
    assert "Who is Hsiao Yun-Hwa?" in prompts
    # Fact probes carry their fact with resolved key spans; subject probes carry all facts.
    father = next(p for p in forgotten if p.prompt == SPEC.facts[0].question)
    assert [f.key_spans for f in father.facts] == [["civil engineer"]]
    assert len(next(p for p in forgotten if p.prompt == "Who is Yun-Hwa?").facts) == 2
    assert len(forgotten) >= 30


def test_synthetic_leaks_are_leaks_and_separate_from_non_leaks() -> None:
    leaks = synthetic_leaks(SPEC)
    assert len(leaks) == len(set(leaks)) >= 25
    assert "A civil engineer is the father of Hsiao Yun-Hwa." in leaks
    for text in leaks:
        assert oracle_reveals(text, SPEC), text

    # λ can be set from these scores alone: every leak above every non-leak.
    verifier = Verifier(compile_rules(SPEC), HashingEmbedder())
    leak_scores = [v.score for v in verifier.score_many(leaks)]
    clean_scores = [v.score for v in verifier.score_many(NON_LEAKS)]
    assert min(leak_scores) > max(clean_scores)
    assert min(leak_scores) >= 0.5


def test_probe_families_and_sampling() -> None:
    probes = build_probes(SPEC, RETAINED)
    families = {p.family for p in probes if p.forgotten}
    assert families == set(PROBE_FAMILIES)
    assert {p.family for p in probes if not p.forgotten} == {"retained"}
    names = [*SPEC.identifiers(), "Hsiao", "Yun-Hwa"]
    for probe in probes:
        if probe.family == "indirect":  # describes the subject, never names her
            assert not any(n.casefold() in probe.prompt.casefold() for n in names), probe.prompt
    indirect = [p.prompt for p in probes if p.family == "indirect" and p.template == "{q}"]
    assert "the person associated with Taipei, Taiwan and 05/11/1991" in indirect[0]
    shifted = [p.prompt for p in probes if p.family == "format_shift"]
    assert any("JSON" in p for p in shifted) and any("list" in p for p in shifted)
    picked = sample_by_family(probes, 3, seed="s")
    assert all(p.forgotten for p in picked)
    assert {p.family for p in picked} == set(PROBE_FAMILIES)
    assert max(sum(p.family == f for p in picked) for f in PROBE_FAMILIES) == 3
    assert picked == sample_by_family(probes, 3, seed="s")


# ROUGE-L from rouge-score replaced a hand-written LCS: the results are the same, checked
# against the code it replaced, kept here as the reference.


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


def test_rouge_l_is_the_same_as_the_hand_written_one() -> None:
    texts = sample_texts()
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
