"""λ calibration from per-request evidence: pooling is never looser than the merged rule set, the
model's own leaks lower λ, retained answers are scored off the critical path, B's probes are the
questions refinement handles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.generative.embedder import CachingEmbedder, HashingEmbedder
from models.generative.probes import oracle_reveals, synthetic_leaks
from models.generative.rules import Fact, ForgetSpec, RuleSet, compile_rules
from models.generative.verifier import Verifier
from service.registry.config import GenerativePolicy
from service.rules.calibration import (
    RequestEvidence,
    budget_probe_prompts,
    calibrate_threshold_for,
    evidence_key,
    request_evidence,
    spec_from_rules,
)
from service.rules.rulesets import merge_rule_sets
from tests.support.generative_data import FORGOTTEN, PEOPLE, facts_of


@pytest.fixture(scope="module")
def rule_sets() -> dict[str, RuleSet]:
    return {
        f"r{i}": compile_rules(ForgetSpec([name], facts=[Fact(q, a) for q, a in facts_of(name)]))
        for i, name in enumerate(PEOPLE)
    }


def test_pooled_scores_bound_the_merged_verifier(rule_sets: dict[str, RuleSet]) -> None:
    """Every leak scores at least as high under the merged rules as under its own, and a
    retained answer's merged score is the max of its per-request scores."""
    embedder = HashingEmbedder()
    negatives = [a for name in list(PEOPLE)[:2] for _, a in facts_of(name)] + [
        "The weather in Lisbon is mild in spring."
    ]
    evidence = {
        rid: request_evidence(rs, embedder, CachingEmbedder(embedder), negatives, seed=rid)
        for rid, rs in rule_sets.items()
    }
    merged = Verifier(merge_rule_sets(rule_sets), embedder)
    for rid, rs in rule_sets.items():
        spec = spec_from_rules(rs)
        leaks = [t for t in synthetic_leaks(spec) if oracle_reveals(t, spec)]
        own = evidence[rid].positive_scores
        assert len(own) == len(leaks) > 0
        merged_scores = [v.score for v in merged.score_many(leaks)]
        assert all(m >= o - 1e-6 for m, o in zip(merged_scores, own, strict=True))
    merged_neg = [v.score for v in merged.score_many(negatives)]
    pooled_neg = np.max([evidence[rid].negative_scores for rid in sorted(evidence)], axis=0)
    np.testing.assert_allclose(merged_neg, pooled_neg, atol=1e-6)

    policy = GenerativePolicy()
    result, calibration, records = calibrate_threshold_for(evidence, policy)
    assert result.n == sum(len(ev.positive_scores) for ev in evidence.values())
    assert calibration["negatives"] == len(negatives)
    assert calibration["requests_in_force"] == len(rule_sets)
    assert sum(kind == "positive_score" for kind, _, _ in records) == result.n


def test_evidence_round_trips_and_mismatched_negatives_are_refused() -> None:
    ev = RequestEvidence([0.9, 0.8], [0.1, 0.2, 0.3])
    assert RequestEvidence.from_json(ev.to_json()) == ev
    other = RequestEvidence([0.7], [0.1])
    with pytest.raises(ValueError, match="different retained answers"):
        calibrate_threshold_for({"a": ev, "b": other}, GenerativePolicy())
    # The cache key changes with the retained answers and with the embedder.
    assert evidence_key("minilm", ["x"]) != evidence_key("minilm", ["y"])
    assert evidence_key("minilm", ["x"]) != evidence_key("hashing", ["x"])


def test_budget_probes_are_the_questions_refinement_handles(
    rule_sets: dict[str, RuleSet], tmp_path: Path
) -> None:
    from tests.support.generative_data import RETAINED, write_retain_file

    rules = rule_sets["r0"]
    verifier = Verifier(rules, HashingEmbedder())
    retain = write_retain_file(tmp_path / "retain.jsonl")
    prompts = budget_probe_prompts(verifier, rules, str(retain), 0.5, 1000, seed=1)
    retained_questions = {q for name in RETAINED for q, _ in facts_of(name)}
    # Every retained question, and no probe that names the forgotten subject.
    assert retained_questions <= set(prompts)
    assert not any(verifier.names_subject(p, 0.5) for p in prompts)
    # A seeded uniform sample below the limit, the same every time.
    few = budget_probe_prompts(verifier, rules, str(retain), 0.5, 5, seed=1)
    assert len(few) == 5 and set(few) <= set(prompts)
    assert few == budget_probe_prompts(verifier, rules, str(retain), 0.5, 5, seed=1)


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


def test_calibration_scores_a_leak_no_higher_than_all_its_rules_do() -> None:
    """A leak scored with only the facts its draw came from (the others dissimilar) never
    scores above its score under every fact: the misses counted are an upper bound."""
    from service.rules.calibration import draw_positives

    spec = ForgetSpec([FORGOTTEN], facts=[Fact(q, a) for q, a in facts_of(FORGOTTEN)])
    rules = compile_rules(spec)
    embedder = HashingEmbedder()
    drawn = draw_positives(rules, "seed", 100)
    assert any(p.fact is not None for p in drawn) and any(p.fact is None for p in drawn)
    partial = request_evidence(rules, embedder, embedder, [], seed="seed", positives=drawn)
    full = [v.score for v in Verifier(rules, embedder).score_many([p.text for p in drawn])]
    assert all(p <= f + 1e-9 for p, f in zip(partial.positive_scores, full, strict=True))
    # The same draw for the same seed, and a uniform sample when it is smaller.
    assert draw_positives(rules, "seed", 100) == drawn
    few = draw_positives(rules, "seed", 5)
    assert len(few) == 5 and set(few) <= set(drawn)
