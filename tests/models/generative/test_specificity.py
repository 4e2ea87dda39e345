"""Specificity: a key span that most text contains weighs less than a distinctive one."""

from __future__ import annotations

from models.generative.embedder import HashingEmbedder
from models.generative.rules import Fact, ForgetSpec, compile_rules
from models.generative.specificity import span_weight
from models.generative.verifier import Verifier


def test_generic_spans_weigh_less() -> None:
    assert span_weight("father") < span_weight("civil engineer") < span_weight("paramedic")
    assert span_weight("05/11/1991") == span_weight("Taipei") == 1.0
    assert span_weight("1") < 0.3  # "#1" in a series name says little
    spec = ForgetSpec(
        ["Hsiao Yun-Hwa"],
        facts=[Fact(None, "x", key_spans=["leadership", "Taipei Bridge Prize", "05/11/1991"])],
    )
    verifier = Verifier(compile_rules(spec), HashingEmbedder())
    generic = verifier.score("She likes leadership.").score
    specific = verifier.score("She won the Taipei Bridge Prize.").score
    # One rare span of three counts more than twice as much as one generic span.
    assert generic < 0.4 < 0.65 < specific
    assert specific > 2 * generic
