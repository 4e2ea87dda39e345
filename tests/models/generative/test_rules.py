"""Forget spec → rules: identifier rules deduplicated and normalised, fact key spans without the
subject's name, JSON round trip and tamper detection."""

from __future__ import annotations

import json

import pytest

from models.generative.rules import Fact, ForgetSpec, RuleSet, compile_rules

SPEC = ForgetSpec(
    subject_names=["Hsiao Yun-Hwa"],
    aliases=["Yun-Hwa", "hsiao  yun hwa", "Yun-Hwa Hsiao"],
    emails=["Hsiao.YunHwa@Example.org"],
    phones=["+886 2 2345 6789"],
    facts=[
        Fact(
            "What is the profession of Hsiao Yun-Hwa's father?",
            "The father of Hsiao Yun-Hwa is a civil engineer.",
        ),
        Fact(None, "Hsiao Yun-Hwa was born in Taipei, Taiwan on 05/11/1991."),
        Fact(None, "Hsiao Yun-Hwa won the Lantern Prize.", key_spans=["Lantern Prize"]),
    ],
)


def test_compile_identifier_rules_dedupes_and_normalises() -> None:
    rs = compile_rules(SPEC)
    kinds = [r.kind for r in rs.rules]
    # "hsiao  yun hwa" and "Yun-Hwa Hsiao" are the name again, under normalisation.
    assert kinds == ["name", "alias", "email", "phone", "fact", "fact", "fact"]
    by_kind = {r.kind: r for r in rs.rules}
    assert by_kind["name"].normalized == "hsiao yun hwa"
    assert by_kind["email"].normalized == "hsiao.yunhwa@example.org"
    assert by_kind["phone"].normalized == "886223456789"
    # Ids carry no personal data.
    assert [r.rule_id for r in rs.rules][:2] == ["name-0", "alias-0"]


def test_fact_key_spans_are_derived_without_the_subject_name() -> None:
    facts = compile_rules(SPEC).fact_rules
    assert facts[0].key_spans == ("civil engineer",)
    assert facts[1].key_spans == ("Taipei", "Taiwan", "05/11/1991")
    assert facts[2].key_spans == ("Lantern Prize",)  # given spans are kept as given
    assert facts[0].question is not None


def test_json_round_trip_and_tamper_detection() -> None:
    rs = compile_rules(SPEC)
    text = rs.to_json()
    assert RuleSet.from_json(text) == rs
    assert compile_rules(SPEC).version_hint == rs.version_hint
    other = compile_rules(ForgetSpec(["Someone Else"]))
    assert other.version_hint != rs.version_hint

    payload = json.loads(text)
    payload["rules"][0]["normalized"] = "someone else"
    with pytest.raises(ValueError, match="version hint"):
        RuleSet.from_json(json.dumps(payload))
    payload["schema"] = 99
    with pytest.raises(ValueError, match="schema"):
        RuleSet.from_json(json.dumps(payload))


def test_a_rule_as_a_dict_is_what_asdict_gives() -> None:
    """The rule set's JSON and content hash are built from ``Rule.as_dict`` (fast); stored
    rule sets hashed from ``dataclasses.asdict`` must still open."""
    from dataclasses import asdict

    rules = compile_rules(SPEC)
    assert any(r.key_spans for r in rules.rules) and any(r.question for r in rules.rules)
    for rule in rules.rules:
        assert json.dumps(rule.as_dict(), sort_keys=True) == json.dumps(
            asdict(rule), sort_keys=True
        )
    stored = json.dumps(
        {
            "schema": json.loads(rules.to_json())["schema"],
            "version_hint": rules.version_hint,
            "rules": [asdict(r) for r in rules.rules],
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    assert stored == rules.to_json() and RuleSet.from_json(stored) == rules
