"""Compile a forget spec (who and what to forget) into an immutable, serialisable rule set.

Rule ids are positional ("name-0", "fact-3"), never derived from the content: ids end up in logs
and audit rows, and a hash of a name is easy to reverse by guessing names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, cast, get_args

from models.generative.keyspans import derive_key_spans
from models.generative.normalize import digits, normalize_email, words

RuleKind = Literal["name", "alias", "email", "phone", "fact"]
IDENTIFIER_KINDS: frozenset[str] = frozenset({"name", "alias", "email", "phone"})
RULE_KINDS: frozenset[str] = frozenset(get_args(RuleKind))
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Fact:
    """One thing to forget. `answer` is the fact as a statement; `question` is how it is asked."""

    question: str | None
    answer: str
    key_spans: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ForgetSpec:
    subject_names: list[str]
    aliases: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)

    def identifiers(self) -> list[str]:
        """Names and aliases: the strings that identify the subject in running text."""
        return [*self.subject_names, *self.aliases]


@dataclass(frozen=True)
class Rule:
    rule_id: str
    kind: RuleKind
    text: str
    # Identifier rules: the matching form (folded words joined by spaces; digits for phones).
    normalized: str = ""
    # Fact rules only.
    key_spans: tuple[str, ...] = ()
    question: str | None = None

    @property
    def is_identifier(self) -> bool:
        return self.kind in IDENTIFIER_KINDS

    def as_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives, built directly: rule sets are opened on the
        serving path (every request's rules after an activation), where asdict's deep copy
        was most of the cost."""
        return {
            "rule_id": self.rule_id,
            "kind": self.kind,
            "text": self.text,
            "normalized": self.normalized,
            "key_spans": list(self.key_spans),
            "question": self.question,
        }


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    # Content hash of the rules: equal rule sets get equal hints. The service assigns versions.
    version_hint: str

    @property
    def identifier_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.is_identifier]

    @property
    def fact_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.kind == "fact"]

    @cached_property
    def masked_fact_texts(self) -> tuple[str, ...]:
        """What a verifier embeds the fact rules as (identifiers masked). Kept with the rule
        set, so it lives as long as the rules and no longer: an activation asks for it four
        times per request (two verifiers, two fact selections)."""
        # Imported here: matching imports this module.
        from models.generative.matching import mask_identifiers

        names = [r.text for r in self.rules if r.kind in ("name", "alias")]
        return tuple(mask_identifiers(r.text, names) for r in self.fact_rules)

    def to_json(self) -> str:
        payload = {
            "schema": SCHEMA_VERSION,
            "version_hint": self.version_hint,
            "rules": [r.as_dict() for r in self.rules],
        }
        return json.dumps(payload, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RuleSet:
        payload = json.loads(text)
        if payload.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"unsupported rule-set schema {payload.get('schema')!r}")
        rules = tuple(_rule_from_dict(d) for d in payload["rules"])
        hint = _content_hash(rules)
        if hint != payload["version_hint"]:
            raise ValueError("rule-set content does not match its version hint")
        return cls(rules=rules, version_hint=hint)


def _rule_from_dict(d: dict[str, Any]) -> Rule:
    kind = d["kind"]
    if kind not in RULE_KINDS:
        raise ValueError(f"unknown rule kind {kind!r}")
    return Rule(
        rule_id=str(d["rule_id"]),
        kind=cast(RuleKind, kind),
        text=str(d["text"]),
        normalized=str(d.get("normalized", "")),
        key_spans=tuple(str(s) for s in d.get("key_spans", ())),
        question=d.get("question"),
    )


def _content_hash(rules: tuple[Rule, ...]) -> str:
    canon = json.dumps([r.as_dict() for r in rules], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def subject_of(rule: Rule) -> str:
    """The subject (forget spec) a rule came from. A compiled rule set is one subject; merging
    prefixes each rule set's ids with "<position>/", so the prefix tells the subjects apart."""
    return rule.rule_id.rpartition("/")[0]


def merge_rule_sets(rule_sets: Sequence[RuleSet]) -> RuleSet:
    """One rule set for a verifier serving several subjects (one per forget spec), in order.

    Ids become "<position>/<id>", which is how the verifier knows whose name and whose facts
    go together (`subject_of`)."""
    rules = tuple(
        # The constructor, not dataclasses.replace: serving merges every request's rules on
        # the first read after an activation, and replace costs three times as much per rule.
        Rule(f"{i}/{r.rule_id}", r.kind, r.text, r.normalized, r.key_spans, r.question)
        for i, rs in enumerate(rule_sets)
        for r in rs.rules
    )
    hints = "|".join(rs.version_hint for rs in rule_sets)
    return RuleSet(rules=rules, version_hint=hashlib.sha256(hints.encode()).hexdigest()[:16])


def resolve_facts(spec: ForgetSpec) -> list[Fact]:
    """The spec's facts with key spans filled in where the DPO gave none."""
    resolved = []
    for fact in spec.facts:
        spans = fact.key_spans or derive_key_spans(
            fact.answer, exclude=spec.identifiers(), question=fact.question
        )
        resolved.append(Fact(question=fact.question, answer=fact.answer, key_spans=list(spans)))
    return resolved


def _normalize_identifier(kind: RuleKind, text: str) -> str:
    """The matching form of an identifier (see `Rule.normalized`)."""
    if kind == "email":
        return normalize_email(text)
    if kind == "phone":
        return digits(text)
    return " ".join(words(text))


def _distinct_identifiers(spec: ForgetSpec) -> list[tuple[RuleKind, str, str]]:
    """(kind, text, matching form) of the spec's identifiers: names, aliases, emails, phones,
    each in the order given, without empty or duplicate ones."""
    by_kind: list[tuple[RuleKind, list[str]]] = [
        ("name", spec.subject_names),
        ("alias", spec.aliases),
        ("email", spec.emails),
        ("phone", spec.phones),
    ]
    seen: set[tuple[str, str]] = set()
    out: list[tuple[RuleKind, str, str]] = []
    for kind, texts in by_kind:
        for text in texts:
            norm = _normalize_identifier(kind, text)
            # Duplicates (same identifier typed twice, alias equal to a name or to a name's
            # words in another order, which the matcher treats as exact anyway) add nothing.
            if kind in ("name", "alias"):
                key = ("ident", " ".join(sorted(norm.split())))
            else:
                key = (kind, norm)
            if norm and key not in seen:
                seen.add(key)
                out.append((kind, text, norm))
    return out


def compile_rules(spec: ForgetSpec) -> RuleSet:
    rules: list[Rule] = []
    counters: dict[str, int] = {}

    def add(kind: RuleKind, text: str, normalized: str = "", **extra: Any) -> None:
        n = counters.get(kind, 0)
        counters[kind] = n + 1
        rules.append(Rule(f"{kind}-{n}", kind, text, normalized, **extra))

    for kind, text, norm in _distinct_identifiers(spec):
        add(kind, text, norm)
    for fact in resolve_facts(spec):
        add("fact", fact.answer, key_spans=tuple(fact.key_spans), question=fact.question)

    frozen = tuple(rules)
    return RuleSet(rules=frozen, version_hint=_content_hash(frozen))
