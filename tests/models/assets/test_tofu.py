"""TOFU data as forget specs: loaders and author-name extraction (no model involved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.assets.tofu import (
    FORGET_FILE,
    QA,
    REAL_AUTHORS_FILE,
    RETAIN_FILE,
    WORLD_FACTS_FILE,
    author_name,
    author_specs,
    load_choice_qa,
    load_qa,
    name_candidates,
    tofu_file,
)
from models.generative.normalize import skeleton, words

needs_data = pytest.mark.skipif(not tofu_file(FORGET_FILE).is_file(), reason="TOFU data not found")


@needs_data
def test_every_author_gets_a_plausible_name_and_twenty_facts() -> None:
    rows = load_qa(tofu_file(FORGET_FILE))
    specs = author_specs(rows)
    assert sorted(specs) == list(range(10))
    names = {i: spec.subject_names[0] for i, spec in specs.items()}
    assert names[0] == "Hsiao Yun-Hwa"
    assert names[4] == "Jad Ambrose Al-Shamary"
    assert names[9] == "Tae-ho Park"
    assert len(set(names.values())) == 10
    for index, spec in specs.items():
        name = names[index]
        assert 2 <= len(name.split()) <= 4
        assert all(part[:1].isupper() for part in name.split())
        mine = [r for r in rows if r.author_index == index]
        assert len(spec.facts) == 20
        assert [f.answer for f in spec.facts] == [r.answer for r in mine]
        assert [f.question for f in spec.facts] == [r.question for r in mine]
        # The first row states the full name.
        assert skeleton(name) in skeleton(mine[0].question + " " + mine[0].answer)
        # Most answers name the author, in full or by one part of the name ("Rohani has…").
        parts = set(words(name))
        named = sum(bool(parts & set(words(r.answer))) for r in mine)
        assert named >= 0.6 * len(mine), (name, named)
        in_full = sum(skeleton(name) in skeleton(r.question + " " + r.answer) for r in mine)
        assert in_full >= 0.8 * len(mine), (name, in_full)


@needs_data
def test_loaders_read_the_shared_files() -> None:
    retain = load_qa(tofu_file(RETAIN_FILE))
    assert len(retain) == 300 and all(r.author_index is None for r in retain)
    for name in (REAL_AUTHORS_FILE, WORLD_FACTS_FILE):
        rows = load_choice_qa(tofu_file(name))
        assert len(rows) >= 100
        for row in rows:
            assert row.options[0] == row.answer
            assert len(row.wrong_answers) == 3
            assert skeleton(row.answer) not in {skeleton(w) for w in row.wrong_answers}


def test_name_candidates_break_at_punctuation_and_drop_possessives() -> None:
    found = name_candidates("What is the profession of Hsiao Yun-Hwa's father in Taipei, Taiwan?")
    assert "Hsiao Yun-Hwa" in found
    assert not any("Taipei" in c and "Taiwan" in c for c in found)
    assert not any(c.startswith("What") for c in found)


def test_author_name_prefers_the_longest_frequent_name(tmp_path: Path) -> None:
    rows = [
        QA("Who is the author born in Baghdad?", "It is Jad Ambrose Al-Shamary.", 0),
        QA("What did Jad Ambrose Al-Shamary write?", "He wrote Songs of Dust.", 0),
        QA("Where does Jad Ambrose Al-Shamary live?", "Jad Ambrose Al-Shamary lives in Basra.", 0),
        QA("Did Jad Ambrose Al-Shamary win awards?", "Yes, Al-Shamary won the Gold Quill.", 0),
    ]
    assert author_name(rows) == "Jad Ambrose Al-Shamary"
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r.__dict__) for r in rows) + "\n")
    assert load_qa(path) == rows
    specs = author_specs(load_qa(path))
    assert specs[0].subject_names == ["Jad Ambrose Al-Shamary"] and len(specs[0].facts) == 4


def test_malformed_rows_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": ""}) + "\n")
    with pytest.raises(ValueError, match="answer"):
        load_qa(path)
    with pytest.raises(ValueError, match="author_index"):
        author_specs([QA("Q?", "A.")])
