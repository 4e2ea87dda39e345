"""Whom a text attributes a fact to: the forgotten subject, someone else, or nobody in particular.

A fact rule must fire when a response reveals the fact *about the forgotten subject*, not when
a retained person happens to share it ("X's father was a paramedic" is no leak of "Y's father
was a paramedic"). The context is the prompt and the response together. For each subject (one
forget spec; see `rules.subject_of`) and each of its facts, the attribution factor in [0, 1] is:

- 1.0 when the context mentions no person other than the subject: the text is about the
  subject (named), or about nobody named ("A civil engineer." to "What does her father do?"),
  and the verifier stays conservative there;
- otherwise the strongest evidence that the subject is meant all the same: its name, alias,
  e-mail or phone (the identifier score, fuzzy included), or its identifying attributes, the
  key spans of its *other* facts ("the author born in Taipei on 05/11/1991"), each weighted by
  specificity and capped at ATTRIBUTE_CAP, since one shared attribute (a genre, a city) is
  common among people while several together identify one: combined evidence that reaches
  IDENTIFYING_EVIDENCE (two fully specific attributes) counts as identification, 1.0, as a
  name does (a question about her, answered with some other name in it, is still about her).
  An attribute counts when it appears as a run of words (no fuzzy matching: it is evidence
  about whom, not a leak).

Person mentions are found without a tagger, outside quotation marks (titles): runs of two or
more capitalised words containing a word rarer than NAME_WORD_ZIPF (wordfreq; "Linda Harrison",
not "New York"), a capitalised word that rare with a possessive ("Vasquez's"), or a very rare
capitalised word opening a sentence ("Tomasino frequently…"). Common real names whose every
word is frequent English ("John Smith") are missed: the text then counts as naming nobody,
which keeps the verifier conservative, never lenient. A mention that fuzzily matches the
subject's names, or lies inside one of the subject's own key spans (a relative's name, a book
title), is the subject's own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from models.generative.matching import Text, has_run, match_identifier
from models.generative.normalize import skeleton, words
from models.generative.rules import Rule, RuleSet, subject_of
from models.generative.specificity import is_frequent, span_weight, zipf

# One attribute alone moves attribution at most this far (see the module docstring).
ATTRIBUTE_CAP = 0.5
# A text identifies a subject by attributes alone when their combined evidence reaches that of
# two fully specific ones (one shared attribute is common among people; two together are not).
IDENTIFYING_EVIDENCE = 1.0 - (1.0 - ATTRIBUTE_CAP) ** 2
# A capitalised word rarer than this is name-like ("Harrison" 4.1, "Vasquez" 3.0; "York" 5.4,
# "Francisco" 4.5).
NAME_WORD_ZIPF = 4.5
# Alone at a sentence start, a capitalised word must be this rare to be taken for a name
# ("Tomasino" 1.3; "Taipei" 3.3 and every ordinary opener are above).
SINGLE_NAME_ZIPF = 3.0
# Own spans shorter than this (in skeleton letters) are too short to claim a mention.
MIN_OWN_SKELETON = 4

_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|«[^»\n]*»')
_CAPITALISED = re.compile(r"[^\W\d_][\w'’\-]*")
_POSSESSIVE = re.compile(r"['’]s$")
_SENTENCE_END = re.compile(r"(^|[.!?:;\n])[\s\"“”'‘’(\[-]*$")


def _is_rare(word: str, below: float = NAME_WORD_ZIPF) -> bool:
    return zipf(word.casefold()) < below


def person_mentions(text: str) -> list[str]:
    """Name-like mentions in `text` (see the module docstring), in order."""
    clean = _QUOTED.sub(" ", unicodedata.normalize("NFKC", text))
    out: list[str] = []
    run: list[str] = []
    opens_sentence = False

    def flush() -> None:
        words = [_POSSESSIVE.sub("", w) for w in run]
        starts = opens_sentence
        # "The", "In", "Her" open sentences and titles, never names.
        while words and is_frequent(words[0].casefold()):
            words.pop(0)
            starts = False
        possessive = bool(run) and _POSSESSIVE.search(run[-1]) is not None
        if len(words) >= 2 or possessive:
            named = any(_is_rare(w) for w in words)
        else:
            named = starts and len(words) == 1 and _is_rare(words[0], SINGLE_NAME_ZIPF)
        if named:
            out.append(" ".join(words))
        run.clear()

    end = -1
    for m in _CAPITALISED.finditer(clean):
        token = m.group()
        gap = clean[end : m.start()] if end >= 0 else ""
        if run and (gap != " " or _POSSESSIVE.search(run[-1])):
            flush()
        if token[0].isupper():
            if not run:
                opens_sentence = _SENTENCE_END.search(clean[: m.start()]) is not None
            run.append(token)
        elif run:
            flush()
        end = m.end()
    if run:
        flush()
    return out


def _mentions(text: Text) -> list[str]:
    """`person_mentions` of a text, found once per parsed text (a conversation is screened
    with every release of a stream)."""
    if text.mentions is None:
        text.mentions = person_mentions(text.plain)
    return text.mentions


def _combined(present: Sequence[tuple[str, float]], exclude: Collection[str] = ()) -> float:
    """Noisy-OR of the (skeleton, weight) attributes present, each capped at ATTRIBUTE_CAP."""
    evidence = 1.0
    for key, weight in present:
        if key not in exclude:
            evidence *= 1.0 - ATTRIBUTE_CAP * weight
    return 1.0 - evidence


@dataclass(frozen=True)
class _Subject:
    identifiers: tuple[Rule, ...]
    facts: tuple[int, ...]  # indices into the rule set's fact rules
    own_skeletons: tuple[str, ...]
    # Each distinct key span of the subject: (span, its folded words, its skeleton, weight).
    attributes: tuple[tuple[str, tuple[str, ...], str, float], ...]


class SubjectIndex:
    """The rule set's subjects, prepared once per verifier."""

    def __init__(self, rule_set: RuleSet, fuzzy_floor: float) -> None:
        self.fuzzy_floor = fuzzy_floor
        self._facts = rule_set.fact_rules
        groups: dict[str, tuple[list[Rule], list[int]]] = {}
        for rule in rule_set.identifier_rules:
            groups.setdefault(subject_of(rule), ([], []))[0].append(rule)
        for index, rule in enumerate(self._facts):
            groups.setdefault(subject_of(rule), ([], []))[1].append(index)
        self._subjects = []
        for idents, facts in groups.values():
            spans = {skeleton(s): s for i in facts for s in self._facts[i].key_spans}
            own = tuple(s for s in spans if len(s) >= MIN_OWN_SKELETON)
            attributes = tuple(
                (span, tuple(words(span)), key, span_weight(span)) for key, span in spans.items()
            )
            self._subjects.append(_Subject(tuple(idents), tuple(facts), own, attributes))

    def _is_own(self, subject: _Subject, mention: str) -> bool:
        parsed = Text(mention)
        if any(
            match_identifier(r, parsed, self.fuzzy_floor).score > 0 for r in subject.identifiers
        ):
            return True
        folded = skeleton(mention)
        return any(folded in own or own in folded for own in subject.own_skeletons)

    def factors(
        self, context: Sequence[Text], known: dict[str, float] | None = None
    ) -> list[float]:
        """One attribution factor per fact rule (in `RuleSet.fact_rules` order).

        `known`: identifier scores already computed on part of the context (rule id → score;
        the verifier matches every identifier in the response anyway)."""
        out = [1.0] * len(self._facts)
        mentions = [m for text in context for m in _mentions(text)]
        if not mentions:
            return out
        for subject in self._subjects:
            if all(self._is_own(subject, m) for m in mentions):
                continue
            named = self._named(subject, context, known or {})
            present = self._attributes_present(subject, context) if named < 1.0 else []
            for index in subject.facts:
                own = {skeleton(s) for s in self._facts[index].key_spans}
                described = _combined(present, exclude=own)
                # Identified by attributes (as by name): whatever other names the answer
                # holds, it answers about her, and a fact stated then is hers.
                if described >= IDENTIFYING_EVIDENCE:
                    described = 1.0
                out[index] = max(named, described)
        return out

    def identified(self, text: Text, name_threshold: float) -> list[tuple[int, ...]]:
        """The forgotten subjects `text` alone (a user's question) points at, as the indices of
        their fact rules (in `RuleSet.fact_rules` order), one tuple per subject: by one of
        their identifiers scoring at least `name_threshold`, or by their identifying
        attributes, the combined evidence of their key spans present in it (each weighted by
        specificity and capped at ATTRIBUTE_CAP, as in `factors`) reaching
        IDENTIFYING_EVIDENCE."""
        return [
            subject.facts
            for subject in self._subjects
            if any(
                match_identifier(rule, text, self.fuzzy_floor).score >= name_threshold
                for rule in subject.identifiers
            )
            or _combined(self._attributes_present(subject, [text])) >= IDENTIFYING_EVIDENCE
        ]

    def _named(self, subject: _Subject, context: Sequence[Text], known: dict[str, float]) -> float:
        best = 0.0
        for rule in subject.identifiers:
            for i, text in enumerate(context):
                # The last text of the context is the response, whose scores may be known.
                cached = known.get(rule.rule_id) if i == len(context) - 1 else None
                score = (
                    cached
                    if cached is not None
                    else match_identifier(rule, text, self.fuzzy_floor).score
                )
                best = max(best, score)
        return best

    @staticmethod
    def _attributes_present(subject: _Subject, context: Sequence[Text]) -> list[tuple[str, float]]:
        """(skeleton, weight) of each of the subject's key spans that occurs in the context."""
        return [
            (key, weight)
            for _, folded, key, weight in subject.attributes
            if any(has_run(text, folded) for text in context)
        ]
