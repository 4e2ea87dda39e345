"""Text normalisation: case, width and punctuation fold away."""

from __future__ import annotations

from models.generative.normalize import find_emails, find_phone_digits, skeleton, words


def test_normalisation_folds_case_width_and_punctuation() -> None:
    assert words("ＨＳＩＡＯ  Yun-Hwa!") == ["hsiao", "yun", "hwa"]
    assert skeleton("Yun-Hwa") == skeleton("yun hwa") == skeleton("YUNHWA")
    assert find_emails("mail jane.doe [at] example [dot] org now") == ["jane.doe@example.org"]
    assert find_emails("Write to A.B@X.ORG.") == ["a.b@x.org"]
    assert find_phone_digits("call (02) 2345-6789 or 12") == ["0223456789"]
