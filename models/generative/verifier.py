"""Score how much a response reveals of any rule in a rule set.

Verdict score = max over rules. Identifier rules give 1.0 on an exact normalised match and a
rescaled fuzzy similarity otherwise. Fact rules combine two pieces of evidence with a noisy-OR,
1 − (1 − semantic)(1 − overlap), so either one alone can flag a leak (a bare "A civil engineer."
has little semantic weight; a paraphrase may share no key span), times an attribution factor:

- semantic: the best cosine similarity between any response sentence (or the whole response)
  and the fact, both with the subject's names masked, rescaled above `semantic_floor`;
- overlap: how much of the fact's key spans appears, each span weighted by its specificity
  (`specificity.span_weight`): 0.5·max + 0.5·weighted mean over spans, so one revealed rare
  span already counts, revealing them all counts fully, and a generic span counts little;
- attribution (`attribution.SubjectIndex`): whether the prompt and the response attribute the
  fact to the forgotten subject; ~0 when they are about another named person only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.generative.attribution import SubjectIndex
from models.generative.embedder import Embedder, Vectors
from models.generative.matching import (
    NAME_PART_SCORE,
    Text,
    mask_identifiers,
    match_identifier,
    span_presence,
)
from models.generative.normalize import ratio_above, rescale, sentences, skeleton, words
from models.generative.rules import Rule, RuleSet
from models.generative.specificity import span_weight

NAMES = ("name", "alias")
# Span presence from which a key span counts as leaked (exact runs score 1.0, scattered 0.7).
SPAN_LEAK_LEVEL = 0.5
# A word this similar (character ratio) to a word of a forgotten name, or to several of its
# words written together, may be that name misspelt or cut short ("Vasqez", "Velamor",
# "VellamorQuint"): a stream holds it back until the whole answer was screened. Low enough that
# a misspelt word beside a well-spelt one, which together score as her name, is held.
NAME_WORD_LIKENESS = 0.7
# Prompts (conversations) kept parsed, with what was found in them: a stream screens its answer
# against the same conversation at every release.
PARSED_PROMPTS = 64


@dataclass(frozen=True)
class RuleHit:
    rule_id: str
    kind: str
    # What to keep out of the next attempt: surface forms found, or the fact's key spans.
    spans: list[str]
    score: float
    # Fact rules: how strongly the context attributes the fact to its subject (1.0 otherwise).
    attribution: float = 1.0


@dataclass(frozen=True)
class Verdict:
    """Spans in a verdict are personal data (the forgotten content): never log them."""

    score: float
    fired: list[RuleHit]
    leaked_spans: list[str]

    def spans_at(self, threshold: float) -> list[str]:
        """Feedback spans of the hits that reach `threshold` (what refinement bans)."""
        return _unique([s for hit in self.fired if hit.score >= threshold for s in hit.spans])


def _unique(spans: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for span in spans:
        key = skeleton(span)
        if key and key not in seen:
            seen.add(key)
            out.append(span)
    return out


def needs_embedding(
    rule_set: RuleSet, responses: Sequence[str], fuzzy_floor: float = 0.5
) -> list[str]:
    """The responses `Verifier.scores` embeds (each once): those that state none of the rules'
    identifiers exactly. One that does scores 1.0 under that rule, the most any rule scores, so
    its verdict is 1.0 whatever the facts' similarity."""
    rules = rule_set.identifier_rules
    out = []
    for response in dict.fromkeys(responses):
        text = Text(response)
        if not any(match_identifier(rule, text, fuzzy_floor).score >= 1.0 for rule in rules):
            out.append(response)
    return out


def masked_fact_texts(rule_set: RuleSet) -> list[str]:
    """What a verifier embeds its fact rules as (identifiers masked), e.g. to embed many rule
    sets' facts in one call."""
    return list(rule_set.masked_fact_texts)


class Verifier:
    def __init__(
        self,
        rule_set: RuleSet,
        embedder: Embedder,
        *,
        semantic_floor: float = 0.4,
        fuzzy_floor: float = 0.5,
        report_floor: float = 0.05,
        fact_embedder: Embedder | None = None,
    ) -> None:
        """`fact_embedder` embeds the fact rules (default `embedder`); a caching one lets the
        next version reuse the vectors of the facts it shares with this one."""
        self.rule_set = rule_set
        self.embedder = embedder
        self.semantic_floor = semantic_floor
        self.fuzzy_floor = fuzzy_floor
        self.report_floor = report_floor
        self._names = [r.text for r in rule_set.rules if r.kind in ("name", "alias")]
        self._facts = rule_set.fact_rules
        self._subjects = SubjectIndex(rule_set, fuzzy_floor)
        self._prefixes: frozenset[tuple[str, ...]] | None = None
        self._word_starts: frozenset[str] | None = None
        self._name_words: dict[str, bool] = {}
        self._forms = self._name_forms()
        self._parsed: OrderedDict[str, Text] = OrderedDict()
        self._parsed_lock = threading.Lock()
        self._fact_vectors: Vectors = (
            (fact_embedder or embedder).embed(masked_fact_texts(rule_set))
            if self._facts
            else np.zeros((0, 1), dtype=np.float32)
        )

    def parsed(self, prompt: str) -> Text:
        """`Text(prompt)`, kept for the next screens against the same prompt. A kept Text
        fills its caches from several threads at once: each entry is a pure function of the
        text, so a race only computes one twice."""
        with self._parsed_lock:
            text = self._parsed.get(prompt)
            if text is not None:
                self._parsed.move_to_end(prompt)
                return text
        text = Text(prompt)
        with self._parsed_lock:
            self._parsed[prompt] = text
            while len(self._parsed) > PARSED_PROMPTS:
                self._parsed.popitem(last=False)
        return text

    def _mask(self, text: str) -> str:
        return mask_identifiers(text, self._names)

    def units_of(self, responses: Sequence[str]) -> list[str]:
        """The texts ``score_many(responses)`` embeds, e.g. to embed many scorings' at once."""
        return [u for r in responses for u in self._units(r)] if self._facts else []

    def _units(self, response: str) -> list[str]:
        """Sentences, plus the whole response when it has several (facts can span two)."""
        parts = sentences(response)
        units = parts if len(parts) <= 1 else [*parts, response]
        return [self._mask(u) for u in units]

    def span_prefixes(self) -> frozenset[tuple[str, ...]]:
        """Every leading run of folded words of a key span or an identifier of the rules (and
        of each name from any of its words on: "Quindt" alone names her too). A stream holds
        back a tail that is one of these (models.generative.chat.Release). Computed once."""
        if self._prefixes is None:
            runs = [words(span) for rule in self._facts for span in rule.key_spans]
            for rule in self.rule_set.identifier_rules:
                parts = words(rule.text)
                runs += [parts[i:] for i in range(len(parts))] if rule.kind in NAMES else [parts]
            self._prefixes = frozenset(
                tuple(run[:end]) for run in runs for end in range(1, len(run) + 1)
            )
        return self._prefixes

    def span_word_starts(self) -> frozenset[str]:
        """Every start of a word that a held tail can begin with (the first word of each of
        `span_prefixes`): "p", "po", "por", "port" while "Port Ardent" is a key span. A
        stream's first piece is held while it is one (models.generative.chat.Release).
        Computed once."""
        if self._word_starts is None:
            self._word_starts = frozenset(
                run[0][:end] for run in self.span_prefixes() for end in range(1, len(run[0]) + 1)
            )
        return self._word_starts

    def name_length(self) -> int:
        """The most words any forgotten name or alias has (0 without one)."""
        return max((len(words(r.text)) for r in self._name_rules()), default=0)

    def _name_rules(self) -> list[Rule]:
        return [r for r in self.rule_set.identifier_rules if r.kind in NAMES]

    def resembles_name(self, word: str) -> bool:
        """Could the folded `word` be a word of a forgotten name or alias, misspelt or not, or
        several of its words written as one (NAME_WORD_LIKENESS)? Remembered per word."""
        known = self._name_words.get(word)
        if known is None:
            known = self._name_words[word] = any(
                ratio_above(word, form, NAME_WORD_LIKENESS - 1e-9) > 0.0 for form in self._forms
            )
        return known

    def _name_forms(self) -> frozenset[str]:
        """Every run of consecutive words of every name and alias, written as one word."""
        forms: set[str] = set()
        for rule in self._name_rules():
            parts = words(rule.text)
            forms |= {
                "".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)
            }
        return frozenset(forms)

    def names_in(self, text: str, threshold: float) -> bool:
        """Does `text` hold a forgotten name or alias scoring at least `threshold` (fuzzy and
        name parts included)? Unlike the verdict's score, this only grows as text is added
        after a whole word: a stream may act on it before the answer is complete."""
        parsed = Text(text)
        return any(
            match_identifier(rule, parsed, self.fuzzy_floor).score >= threshold
            for rule in self._name_rules()
        )

    def names_subject(self, text: str, threshold: float) -> bool:
        """Does `text` (typically the user's question) name a forgotten subject at `threshold`?

        Identifier rules only: a question that merely resembles a forgotten fact is not, by
        itself, about the subject."""
        parsed = Text(text)
        return any(
            match_identifier(rule, parsed, self.fuzzy_floor).score >= threshold
            for rule in self.rule_set.identifier_rules
        )

    def mentions_subject(self, text: str, threshold: float) -> bool:
        """Does `text` name a forgotten subject, a distinctive part of the name or a close
        misspelling included, whatever λ is (as `identifies_subject` tests names)?

        Refinement asks this of regenerated answers: told not to reveal a name, the model
        misspells it ("Rajeev Majumdde" for "Rajeev Majumdar", measured by bench/guard.py),
        and with λ above NAME_PART_SCORE such an answer scored below λ and was served.
        Attributes are left out: an answer may repeat the description its question gave."""
        # A distinctive part of the name (NAME_PART_SCORE) counts whatever λ is.
        return self.names_subject(text, min(threshold, NAME_PART_SCORE))

    def identifies_subject(self, text: str, threshold: float) -> bool:
        """Does `text` point at a forgotten subject: by name (`names_subject`), or by several
        of their identifying attributes together ("the author born in Taipei on 05/11/1991")?

        A distinctive part of the name on its own ("How has Majumdar's background…") names
        the subject here whatever λ is: people are asked about by surname, and NAME_PART_SCORE
        is a fixed strength, so with λ above it such questions were refined round after round
        (measured by bench/guard.py) instead of refused. λ is calibrated for leaking answers; the
        question only tells whom an answer would be about.

        Refinement refuses a flagged answer to such a question at once, as for a named one."""
        return bool(self._identified(self.parsed(text), threshold))

    def _identified(self, parsed: Text, threshold: float) -> list[tuple[int, ...]]:
        # A distinctive part of the name counts whatever λ is, as in `mentions_subject`.
        return self._subjects.identified(parsed, min(threshold, NAME_PART_SCORE))

    def states_key_span(self, response: str, prompt: str, threshold: float) -> bool:
        """Does `response` state a key span (present at SPAN_LEAK_LEVEL), however common its
        words, of a fact of a forgotten subject that `prompt` identifies (`identifies_subject`
        at `threshold`), a span `prompt` does not give itself?

        Specificity weights a span by how little it tells about *whom* a text is about: "her
        writing is immersive" says nothing of whom, so "immersive" alone must not flag an
        answer about anyone. Once the question identifies a forgotten subject, whom is
        settled, and the same word in the answer is her fact ("What is the writing of the
        author born in Taipei on 05/11/1991 known for?" "Immersive worlds."). Only the facts of
        the subjects the question identifies count: a generic word from another forgotten
        subject's facts is no more hers than anyone's, and a question taken for being about a
        subject by mistake (a country that is also a forgotten name part) then is refused only
        for that subject's words. Refinement asks this only of first answers to questions that
        identify a subject."""
        given = self.parsed(prompt)
        facts = [index for subject in self._identified(given, threshold) for index in subject]
        if not facts:
            return False
        text = Text(response)
        return any(
            span_presence(span, text) >= SPAN_LEAK_LEVEL
            and span_presence(span, given) < SPAN_LEAK_LEVEL
            for index in facts
            for span in self._facts[index].key_spans
        )

    def score(self, response: str, prompt: str | None = None) -> Verdict:
        """Score `response`; `prompt` (the user's question) tells whom the response is about."""
        return self.score_many([response], None if prompt is None else [prompt])[0]

    def score_many(
        self, responses: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> list[Verdict]:
        """Score several responses with one embedding call (calibration scores thousands).

        `prompts`, when given, holds one prompt (or None) per response."""
        if prompts is not None and len(prompts) != len(responses):
            raise ValueError("give one prompt (or None) per response")
        units = [self._units(r) for r in responses] if self._facts else [[] for _ in responses]
        flat = [u for us in units for u in us]
        vectors = self.embedder.embed(flat) if flat else np.zeros((0, 1), dtype=np.float32)
        verdicts = []
        offset = 0
        for i, (response, us) in enumerate(zip(responses, units, strict=True)):
            sims = vectors[offset : offset + len(us)] @ self._fact_vectors.T if us else None
            offset += len(us)
            prompt = None if prompts is None else prompts[i]
            prompt_text = self.parsed(prompt) if prompt else None
            verdicts.append(self._verdict(response, prompt_text, sims))
        return verdicts

    def scores(
        self, responses: Sequence[str], embedded: Sequence[str] | None = None
    ) -> list[float]:
        """`score_many(responses)`'s scores, without embedding the responses that state an
        identifier exactly: that rule scores 1.0, the most any rule scores, so their verdict
        is 1.0 whatever the facts' similarity. Calibration scores leaks this way, most of
        which name their subject; serving needs `score_many` (every hit's spans).
        `embedded`: `needs_embedding(responses)`, when the caller has it already."""
        rest = self.needs_embedding(responses) if embedded is None else embedded
        scored = dict(zip(rest, (v.score for v in self.score_many(rest)), strict=True))
        return [scored.get(r, 1.0) for r in responses]

    def needs_embedding(self, responses: Sequence[str]) -> list[str]:
        """The responses `scores` embeds: those that state no identifier exactly."""
        return needs_embedding(self.rule_set, responses, self.fuzzy_floor)

    def _verdict(self, response: str, prompt: Text | None, sims: Vectors | None) -> Verdict:
        text = Text(response)
        hits: list[RuleHit] = []
        identifier_scores: dict[str, float] = {}
        for rule in self.rule_set.identifier_rules:
            match = match_identifier(rule, text, self.fuzzy_floor)
            identifier_scores[rule.rule_id] = match.score
            if match.score > self.report_floor:
                spans = _unique([*match.surfaces, rule.text])
                hits.append(RuleHit(rule.rule_id, rule.kind, spans, match.score))
        if self._facts:
            # The response last: `factors` reuses its identifier scores from above.
            context = [text] if prompt is None else [prompt, text]
            factors = self._subjects.factors(context, identifier_scores)
        for index, rule in enumerate(self._facts):
            semantic = 0.0 if sims is None else float(np.max(sims[:, index]))
            hit = self._fact_hit(rule, text, rescale(semantic, self.semantic_floor), factors[index])
            if hit.score > self.report_floor:
                hits.append(hit)
        hits.sort(key=lambda h: h.score, reverse=True)
        score = hits[0].score if hits else 0.0
        leaked = _unique([s for hit in hits for s in hit.spans])
        return Verdict(score=score, fired=hits, leaked_spans=leaked)

    def _fact_hit(self, rule: Rule, text: Text, semantic: float, attribution: float) -> RuleHit:
        presence = [span_presence(span, text) for span in rule.key_spans]
        weights = [span_weight(span) for span in rule.key_spans]
        revealed = [w * p for w, p in zip(weights, presence, strict=True)]
        overlap = 0.5 * max(revealed) + 0.5 * sum(revealed) / sum(weights) if revealed else 0.0
        score = attribution * (1.0 - (1.0 - semantic) * (1.0 - overlap))
        leaked = [s for s, p in zip(rule.key_spans, presence, strict=True) if p >= SPAN_LEAK_LEVEL]
        # A paraphrase can reveal the fact without any key span: then name them all.
        return RuleHit(rule.rule_id, rule.kind, leaked or list(rule.key_spans), score, attribution)
