"""Calibration on the model's own outputs (service.rules.model_leaks) and λ on pooled leaks."""

from __future__ import annotations

from pathlib import Path

from models.generative.embedder import CachingEmbedder, HashingEmbedder
from models.generative.probes import oracle_leaks
from models.generative.rules import Fact, ForgetSpec, compile_rules
from models.generative.verifier import Verifier
from service.registry.config import GenerativePolicy
from service.rules.calibration import RequestEvidence, calibrate_threshold_for
from service.rules.model_leaks import HELD_APART_FAMILIES, held_apart_probes, model_leaks
from tests.generative_data import FORGOTTEN, facts_of


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


def test_real_leaks_the_verifier_misses_lower_lambda_or_void_the_guarantee() -> None:
    """Synthetic leaks alone certify λ = 1.0; pooled with the model's own leaks that score
    0.3, λ must come down to them (or no guarantee), never stay where it misses them."""
    policy = GenerativePolicy()
    evidence = {"r": RequestEvidence([1.0] * 100, [0.0, 0.2])}
    alone, cal_alone, _ = calibrate_threshold_for(evidence, policy)
    assert alone.certified and alone.threshold == 1.0
    assert cal_alone["positives_model"] == 0

    pooled, cal, records = calibrate_threshold_for(evidence, policy, [0.3] * 50)
    assert pooled.n == 150 and cal["positives_synthetic"] == 100 and cal["positives_model"] == 50
    assert not pooled.certified or (pooled.threshold is not None and pooled.threshold <= 0.3)
    assert "50 of the model's own answers" in cal["positives_source"]
    assert sum(1 for _, source, _ in records if source == "model_generation") == 50


def test_retained_answers_left_for_later_then_scored_off_the_critical_path() -> None:
    from service.rules.calibration import negative_evidence, request_evidence

    rules = compile_rules(
        ForgetSpec([FORGOTTEN], facts=[Fact(q, a) for q, a in facts_of(FORGOTTEN)])
    )
    embedder = HashingEmbedder()
    negatives = ["Paris is the capital of France.", "The sky is blue."]
    prompts = ["What is the capital of France?", "What colour is the sky?"]
    cache = CachingEmbedder(embedder)
    later = request_evidence(
        rules, embedder, cache, negatives, seed="s", negative_prompts=prompts, score_negatives=False
    )
    assert later.positive_scores and later.negative_scores == []
    full = request_evidence(rules, embedder, cache, negatives, seed="s", negative_prompts=prompts)
    # λ does not depend on the retained answers; the false-flag rate waits for them.
    pending, cal_pending, _ = calibrate_threshold_for({"a": later, "b": full}, GenerativePolicy())
    done, cal_done, _ = calibrate_threshold_for({"a": full, "b": full}, GenerativePolicy())
    assert pending == done
    assert cal_pending["false_flag_rate"] is None and cal_done["false_flag_rate"] is not None
    completed = negative_evidence(later, rules, cache, negatives, prompts)
    assert completed == full
    assert negative_evidence(full, rules, cache, negatives, prompts) is full
