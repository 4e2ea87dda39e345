"""Key spans derived from a fact filed without them: which kinds of span are kept."""

from __future__ import annotations

from models.generative.keyspans import derive_key_spans


def test_derive_key_spans_kinds() -> None:
    spans = derive_key_spans(
        "Yes, Jaime Vasquez was born on the 25th of February in the year 1958 "
        "and studied at the University of Chile."
    )
    assert spans == ["Jaime Vasquez", "25th of February", "1958", "studied", "University of Chile"]
    # Words echoing the question are not key; a capitalised "The" mid-sentence starts a title.
    assert derive_key_spans(
        "The engineers of Vellamor Quindt kept a grey parrot called The Amber Tide.",
        question="Which engineer kept a parrot?",
    ) == ["Vellamor Quindt", "grey", "The Amber Tide"]
    # Only the subject's name: it is kept rather than leaving the fact without spans.
    assert derive_key_spans("The author's full name is Hsiao Yun-Hwa.", ["Hsiao Yun-Hwa"]) == [
        "Hsiao Yun-Hwa"
    ]
