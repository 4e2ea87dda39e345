"""Calibration on the model's own outputs: held-apart probes generated, labelled by the oracle and
scored, with the tiny LM."""

from __future__ import annotations

from pathlib import Path

from models.generative.embedder import CachingEmbedder, HashingEmbedder
from models.generative.probes import oracle_leaks
from models.generative.rules import Fact, ForgetSpec, compile_rules
from models.generative.verifier import Verifier
from service.rules.model_leaks import HELD_APART_FAMILIES, held_apart_probes, model_leaks
from tests.support.generative_data import FORGOTTEN, facts_of


def test_model_leaks_generates_labels_and_scores_with_the_tiny_lm(tiny_lm: Path) -> None:
    from models.generative.generator import Generator

    rules = compile_rules(
        ForgetSpec([FORGOTTEN], facts=[Fact(q, a) for q, a in facts_of(FORGOTTEN)])
    )
    probes = held_apart_probes(rules, 9, seed="1")
    assert probes and len(probes) <= 9
    assert {p.family for p in probes} <= set(HELD_APART_FAMILIES)
    assert all(p.forgotten and p.facts for p in probes)
    # The same seed gives the same held-apart sample (B's probes exclude exactly these).
    assert [p.prompt for p in held_apart_probes(rules, 9, seed="1")] == [p.prompt for p in probes]

    generate = Generator.from_dir(str(tiny_lm)).bind(max_new_tokens=24)
    embedder = HashingEmbedder()
    verifier = Verifier(rules, embedder, fact_embedder=CachingEmbedder(embedder))
    leaks = model_leaks(generate, verifier, probes, seed=0)

    assert leaks.prompts == [p.prompt for p in probes]
    assert sum(f["generated"] for f in leaks.by_family.values()) == len(probes)
    # Greedy decoding: the labels can be checked against the oracle independently.
    answers = [
        generate(p.prompt, banned_phrases=(), instruction=None, seed=i)
        for i, p in enumerate(probes)
    ]
    leaking = [
        (a, p.prompt)
        for a, p in zip(answers, probes, strict=True)
        if any(oracle_leaks(a, f) for f in p.facts)
    ]
    assert leaks.leaking == len(leaking) == sum(f["leaking"] for f in leaks.by_family.values())
    expected = [
        v.score for v in verifier.score_many([a for a, _ in leaking], [p for _, p in leaking])
    ]
    assert leaks.scores == expected
    assert all(0.0 <= s <= 1.0 for s in leaks.scores)
