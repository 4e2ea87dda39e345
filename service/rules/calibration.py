"""Calibrating a rule set without generating: λ from verifier scores on leaking texts.

Positives are leaking texts built from each forget spec (the fact itself, reorderings,
paraphrase templates) that the labelling oracle confirms reveal it; negatives are retained
answers about other subjects. Both are scored once per request, under that request's rules,
and kept with the rule-set version (scores only), so activating the k-th request costs one
request's scoring, not k. Learn-then-Test then picks λ so that the miss rate is ≤ α with
probability ≥ 1 − δ — or says it cannot. No generation on this path: rules go live in seconds,
and the budget B is calibrated afterwards with real generations (see calibrate_budget).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.conformal import ThresholdCalibration, calibrate_threshold, false_flag_rate
from models.generative.embedder import Embedder, PrefetchedEmbedder, Vectors
from models.generative.probes import (
    REVEALS_IDENTIFIER,
    build_probes,
    revealed_by,
    synthetic_leaks,
)
from models.generative.rules import Fact, ForgetSpec, RuleSet, resolve_facts
from models.generative.verifier import Verifier, needs_embedding
from service.registry.config import GenerativePolicy

# At most this many retained answers are scored for the false-flag rate.
MAX_NEGATIVES = 500
# Synthetic leaks scored per request (a seeded sample above it): any n ≥ 29 supports
# α = 0.1, δ = 0.05, and the pooled n grows with every request in force.
MAX_POSITIVES_PER_REQUEST = 100
# Requests activated together share that draw (see positives_per_request), each with at least
# this many: the pooled n stays >= 29 for any count, and the time to suppression does not grow
# with the number of requests activated at once.
MIN_POSITIVES_PER_REQUEST = 5
# Bump when the verifier's scoring changes: stored evidence from before is then recomputed.
# 2: fact rules are subject-aware (attribution from the prompt) and key spans are weighted by
# specificity; retained answers are scored with the question they answer.
EVIDENCE_FORMAT = 2

Record = tuple[str, str, float | None]


def positives_per_request(new_requests: int) -> int:
    """Synthetic leaks scored per request when ``new_requests`` are activated at once.

    Every request contributes the same number, so the pooled sample weighs the requests
    equally, as one request's 100 do on its own; the pool stays near 100 (never under
    MIN_POSITIVES_PER_REQUEST each) instead of growing with the count.
    """
    share = -(-MAX_POSITIVES_PER_REQUEST // max(1, new_requests))
    return max(MIN_POSITIVES_PER_REQUEST, share)


def retained_facts(path: str | None) -> list[Fact]:
    if not path:
        return []
    facts = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                facts.append(Fact(question=row.get("question"), answer=row["answer"]))
    return facts[:MAX_NEGATIVES]


@dataclass(frozen=True)
class RequestEvidence:
    """What one request's rules say on the calibration texts: scores only, never text.

    `positive_scores`: its own oracle-confirmed synthetic leaks under its own rules;
    `negative_scores`: each retained answer under its own rules, in the retained file's order.
    """

    positive_scores: list[float]
    negative_scores: list[float]

    def to_json(self) -> dict[str, list[float]]:
        return {"positive": self.positive_scores, "negative": self.negative_scores}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestEvidence:
        return cls([float(x) for x in data["positive"]], [float(x) for x in data["negative"]])


def evidence_key(
    embedder_kind: str,
    negatives: Sequence[str],
    negative_prompts: Sequence[str | None] | None = None,
) -> str:
    """Cached evidence is reused only while the retained answers (and the questions they are
    scored with) and the embedder are the same and the verifier's scoring has not changed
    (EVIDENCE_FORMAT)."""
    prompts = None if negative_prompts is None else list(negative_prompts)
    canon = json.dumps(
        [EVIDENCE_FORMAT, embedder_kind, list(negatives), prompts], ensure_ascii=False
    )
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Positive:
    """A synthetic leak and the index of the fact rule the oracle found it reveals (None: it
    reveals an identifier). Personal data: lives for one calibration, never stored."""

    text: str
    fact: int | None


def request_evidence(
    rules: RuleSet,
    embedder: Embedder,
    cache: Embedder,
    negatives: Sequence[str],
    *,
    seed: str,
    negative_prompts: Sequence[str | None] | None = None,
    score_negatives: bool = True,
    max_positives: int = MAX_POSITIVES_PER_REQUEST,
    positives: Sequence[Positive] | None = None,
    embedded: Sequence[str] | None = None,
) -> RequestEvidence:
    """Score one request's leaks and the retained answers under that request's rules alone.

    Its cost does not depend on how many requests are in force, and the result is stored with
    the rule-set version, so the next activation reuses it instead of re-scoring everything.
    `cache` (a CachingEmbedder) embeds what comes back every time, the facts and the retained
    answers; the leaks, built from personal data and scored once, go through `embedder`.
    A leak is scored with the semantic evidence of the facts the leaks came from only (the
    others count as dissimilar, `_OnlyFacts`): never above its score under all the rules, so
    the misses counted are an upper bound and λ only more conservative, while the facts a
    calibration embeds are bounded by its leak draw, not by the number of facts in force.
    `negative_prompts`: the question each retained answer answers (None: scored alone), as
    serving scores an answer with its prompt (the verifier's subject attribution reads it).
    `score_negatives=False` leaves the retained answers for later (`negative_evidence`): λ
    needs only the leaks, so the worker scores them off the critical path, in the budget task.
    `positives`: the draw of `draw_positives`, when the caller made it already; `embedded`:
    the leaks of that draw `needs_embedding` returns, when the caller found them already.
    """
    if positives is None:
        positives = draw_positives(rules, seed, max_positives)
    texts = [p.text for p in positives]
    if embedded is None:
        embedded = needs_embedding(rules, texts)
    wanted = _fact_texts(rules, positives, set(embedded))
    on_leaks = Verifier(rules, embedder, fact_embedder=_OnlyFacts(cache, wanted))
    pos = on_leaks.scores(texts, embedded) if positives else []
    if not (negatives and score_negatives):
        return RequestEvidence(pos, [])
    on_retained = Verifier(rules, cache)
    neg = [v.score for v in on_retained.score_many(list(negatives), negative_prompts)]
    return RequestEvidence(pos, neg)


def draw_positives(rules: RuleSet, seed: str, limit: int) -> list[Positive]:
    """The request's oracle-confirmed synthetic leaks, a seeded uniform sample of ``limit``.

    Candidates are checked in a seeded random order until ``limit`` are confirmed, the same
    distribution as confirming all and sampling ``limit`` of them, without running the oracle
    on every candidate (most of the cost for a request with many facts); the sample keeps the
    candidates' order."""
    spec = spec_from_rules(rules)
    facts = resolve_facts(spec)
    candidates = list(enumerate(synthetic_leaks(spec)))
    random.Random(f"positives:{seed}").shuffle(candidates)
    found: list[tuple[int, Positive]] = []
    for order, text in candidates:
        if len(found) >= limit:
            break
        which = revealed_by(text, spec, facts)
        if which is not None:
            fact = None if which == REVEALS_IDENTIFIER else which
            found.append((order, Positive(text, fact)))
    return [positive for _, positive in sorted(found, key=lambda item: item[0])]


def _fact_texts(
    rules: RuleSet, positives: Sequence[Positive], embedded: Collection[str]
) -> set[str]:
    """The embedded (masked) texts of the facts the leaks in ``embedded`` came from (those
    `needs_embedding` returned). A leak left out states an identifier exactly and scores 1.0
    whatever the facts' similarity, and the other leaks' scores stay lower bounds of their
    score under every fact (see request_evidence), so λ only gets more conservative. The
    serving verifier embeds every fact, as before."""
    texts = rules.masked_fact_texts
    return {texts[p.fact] for p in positives if p.fact is not None and p.text in embedded}


class _OnlyFacts:
    """A fact embedder that embeds only ``wanted`` (through ``inner``) and gives the other
    facts a zero vector: similarity 0, so no semantic evidence from them, and a leak's score
    is a lower bound of its score under every fact (see request_evidence)."""

    def __init__(self, inner: Embedder, wanted: Collection[str]) -> None:
        self.inner = inner
        self.wanted = wanted

    def embed(self, texts: Sequence[str]) -> Vectors:
        wanted = [t for t in texts if t in self.wanted]
        if not wanted:
            # The embedder's width, from a text that is no one's personal data.
            width = self.inner.embed(["-"]).shape[1]
            return np.zeros((len(texts), width), dtype=np.float32)
        rows = dict(zip(wanted, self.inner.embed(wanted), strict=True))
        width = next(iter(rows.values())).shape[0]
        zero = np.zeros(width, dtype=np.float32)
        return np.stack([rows.get(t, zero) for t in texts]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class LeakDraw:
    """One request's drawn leaks and those of them `needs_embedding` returned."""

    positives: list[Positive]
    embedded: list[str]


def prefetch_evidence(
    rule_sets: Mapping[str, RuleSet], embedder: PrefetchedEmbedder, cache: Embedder, limit: int
) -> dict[str, LeakDraw]:
    """Draw every request's leaks and embed what ``request_evidence`` will ask for, for all of
    ``rule_sets`` at once: the facts those leaks came from (through ``cache``, which keeps them
    for serving) in one call, the leaks' units in another. Activating many requests together
    then costs two embedding calls, not two per request. Returns the draws, for scoring (with
    the leaks to embed: finding them matches every leak against every name)."""
    draws = {}
    facts: set[str] = set()
    units: list[str] = []
    for rid, rules in rule_sets.items():
        drawn = draw_positives(rules, rid, limit)
        rest = needs_embedding(rules, [p.text for p in drawn])
        draws[rid] = LeakDraw(drawn, rest)
        facts |= _fact_texts(rules, drawn, set(rest))
        verifier = Verifier(rules, embedder, fact_embedder=_OnlyFacts(cache, set()))
        units += verifier.units_of(rest)
    cache.embed(sorted(facts))
    embedder.prefetch(units)
    return draws


def negative_evidence(
    evidence: RequestEvidence,
    rules: RuleSet,
    cache: Embedder,
    negatives: Sequence[str],
    negative_prompts: Sequence[str | None] | None,
) -> RequestEvidence:
    """`evidence` with its retained-answer scores, computed now if they were left for later."""
    if len(evidence.negative_scores) == len(negatives):
        return evidence
    on_retained = Verifier(rules, cache)
    neg = [v.score for v in on_retained.score_many(list(negatives), negative_prompts)]
    return RequestEvidence(evidence.positive_scores, neg)


def calibrate_threshold_for(
    evidence: dict[str, RequestEvidence],
    policy: GenerativePolicy,
    model_leaks: Sequence[float] = (),
) -> tuple[ThresholdCalibration, dict[str, Any], list[Record]]:
    """λ for the rule set that merges every request in `evidence`: LTT on all their positive
    scores, false-flag rate on the retained answers. Returns the calibration, the figures to
    store (numbers only) and the records.

    The merged verifier's score is the maximum over all rules, so a request's leak scores at
    least as high under the merged set as under its own rules (the same text is masked the same
    way unless it names another subject in force, which leaks built from one subject's facts do
    not): the misses counted here are an upper bound on the merged set's, and the guarantee
    only gets more conservative. A retained answer is flagged by the merged set when some
    request's rules flag it, so its merged score is taken as the maximum of the per-request
    ones (exact under the same masking caveat).

    `model_leaks`: scores of the model's own answers that the oracle says leak
    (service.rules.model_leaks), pooled with the synthetic ones.
    """
    synthetic, neg_scores = pooled_scores(evidence)
    pos_scores = [*synthetic, *model_leaks]
    result = calibrate_threshold(pos_scores, policy.alpha, policy.delta)
    serving = result.threshold if result.certified else policy.fallback_threshold
    assert serving is not None
    # None: some request's retained-answer scores are still to come (the budget task).
    ffr = false_flag_rate(neg_scores, serving) if neg_scores else None
    calibration: dict[str, Any] = {
        "threshold": asdict(result),
        "threshold_certified": result.certified,
        "serving_threshold": float(serving),
        "false_flag_rate": ffr,
        "negatives": len(neg_scores),
        "positives_synthetic": len(synthetic),
        "positives_model": len(model_leaks),
        "positives_source": evidence_words(len(synthetic), len(model_leaks)),
        "requests_in_force": len(evidence),
        # B starts at the policy's maximum and is replaced by a calibrated value once
        # generations for the probes have been run (task lethe.calibrate_budget).
        "serving_budget": policy.max_budget,
        "budget": {"status": "pending", "max_budget": policy.max_budget},
    }
    records: list[Record] = [("positive_score", "synthetic_leak", s) for s in synthetic]
    records += [("positive_score", "model_generation", s) for s in model_leaks]
    records += [("negative_score", "retained_answer", s) for s in neg_scores]
    return result, calibration, records


def evidence_words(synthetic: int, model: int) -> str:
    """What λ's calibration rests on, in words (stored with the version and the certificate)."""
    words_ = (
        f"{synthetic} synthetic leaks built from the forget specs and confirmed by the labelling "
        "oracle, each scored under its own request's rules"
    )
    if model:
        return (
            f"{words_}, pooled with {model} of the model's own answers to held-apart probes "
            "(paraphrased, indirect without the name, another format) that the oracle labelled "
            "as leaking, scored with their prompts"
        )
    return words_ + "; the model's own answers were not part of it"


def pooled_scores(evidence: dict[str, RequestEvidence]) -> tuple[list[float], list[float]]:
    """The merged rule set's synthetic-leak scores and retained-answer scores (the maximum
    over the requests' own scores, see calibrate_threshold_for); no retained-answer scores
    while any request's are still to be computed."""
    ordered = [evidence[rid] for rid in sorted(evidence)]
    pos_scores = [s for ev in ordered for s in ev.positive_scores]
    if any(not ev.negative_scores for ev in ordered):
        return pos_scores, []  # left for later by some request: no false-flag rate yet
    lengths = {len(ev.negative_scores) for ev in ordered}
    if len(lengths) > 1:
        raise ValueError("requests' evidence was computed on different retained answers")
    neg_scores = [
        max(column) for column in zip(*(ev.negative_scores for ev in ordered), strict=True)
    ]
    return pos_scores, neg_scores


def budget_probe_prompts(
    verifier: Verifier,
    rules: RuleSet,
    retain_qa_file: str | None,
    threshold: float,
    limit: int,
    *,
    seed: int,
    exclude: Collection[str] = (),
) -> list[str]:
    """Questions to calibrate B on: a seeded sample of up to `limit` of the probes that
    refinement could handle, in a random order (the caller may stop early on a count).

    Those are the retained subjects' questions and the probes about forgotten facts that do
    not identify a forgotten subject (by name or by several attributes); a question that does
    is refused at once when its answer is flagged, so it never tells anything about B. Every
    candidate is kept with the same probability: B is calibrated on flagged answers, and
    picking probes by how likely they are to be flagged would change the population the
    guarantee is about. `exclude`: prompts held apart for another calibration (the real leaks
    λ is recalibrated on).
    """
    probes = build_probes(spec_from_rules(rules), retained_facts(retain_qa_file))
    prompts = [
        p.prompt
        for p in probes
        if p.prompt not in exclude
        and (not p.forgotten or not verifier.identifies_subject(p.prompt, threshold))
    ]
    return random.Random(f"budget-probes:{seed}").sample(prompts, min(limit, len(prompts)))


def spec_from_rules(rules: RuleSet) -> ForgetSpec:
    """The forget spec a rule set was compiled from, enough to rebuild its probes and leaks
    (requests' own copies are deleted once their rules are active)."""
    by_kind: dict[str, list[str]] = {"name": [], "alias": [], "email": [], "phone": []}
    facts = []
    for rule in rules.rules:
        if rule.kind == "fact":
            facts.append(Fact(rule.question, rule.text, list(rule.key_spans)))
        else:
            by_kind[rule.kind].append(rule.text)
    return ForgetSpec(
        subject_names=by_kind["name"],
        aliases=by_kind["alias"],
        emails=by_kind["email"],
        phones=by_kind["phone"],
        facts=facts,
    )
