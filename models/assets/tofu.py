"""The TOFU question/answer sets (Maini et al., 2024) as forget specs and evaluation data.

The files are read from the repository's `data/tofu/` (see its README), or from wherever
`LETHE_TOFU_DIR` points when it is set.
Forget files carry an `author_index` per row (20 rows per fictitious author); the utility files
(real_authors, world_facts) carry three wrong answers per question for multiple-choice checks.

`author_specs` turns each author's rows into a `ForgetSpec`: the author's full name is the
capitalised multi-word name that occurs in the most of that author's rows (TOFU names the author
in nearly every question or answer), preferring the longest such name and requiring it to appear
in the author's first row, which in TOFU states the full name.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.generative.normalize import skeleton
from models.generative.rules import Fact, ForgetSpec

TOFU_DIR_ENV = "LETHE_TOFU_DIR"
# models/assets/tofu.py → the repository's root.
REPO_ROOT = Path(__file__).resolve().parents[2]
FORGET_FILE = "forget_a.jsonl"
RETAIN_FILE = "retain.jsonl"
REAL_AUTHORS_FILE = "real_authors.jsonl"
WORLD_FACTS_FILE = "world_facts.jsonl"

# A capitalised word, with inner hyphens and apostrophes ("Yun-Hwa", "Tae-ho", "Al-Shamary").
_CAPITALISED = re.compile(r"(?<![\w'’\-])[A-Z][\w’'\-]*")
_POSSESSIVE = re.compile(r"['’]s$")
# Capitalised words that start sentences or questions and are never part of a TOFU name.
_NOT_NAME_WORDS = """
    a an and are as at but by can could did do does for from has have he her his how i if in
    is it its of on or she so that the their they this to was were what when where which while
    who whom whose why will with would yes no also however although author authors born
"""
_NOT_NAME = frozenset(_NOT_NAME_WORDS.split())
# A name candidate must occur in at least this share of the most frequent candidate's rows,
# for a longer candidate to win over a shorter, more frequent one ("Jad Ambrose Al-Shamary"
# over "Al-Shamary" alone).
_LONGER_NAME_SHARE = 0.8


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    author_index: int | None = None


@dataclass(frozen=True)
class ChoiceQA:
    """A question with its right answer and wrong options, for multiple-choice utility checks."""

    question: str
    answer: str
    wrong_answers: list[str] = field(default_factory=list)

    @property
    def options(self) -> list[str]:
        """The right answer first, then the wrong ones."""
        return [self.answer, *self.wrong_answers]


def default_tofu_dir() -> Path:
    """`$LETHE_TOFU_DIR` if set; else the copy in the repository (`data/tofu`)."""
    override = os.environ.get(TOFU_DIR_ENV)
    if override:
        return Path(override)
    return REPO_ROOT / "data" / "tofu"


def tofu_file(name: str, directory: str | Path | None = None) -> Path:
    """Path of one TOFU file (e.g. `FORGET_FILE`) in `directory` or the default folder."""
    return Path(directory if directory is not None else default_tofu_dir()) / name


def _read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    return rows


def _text(row: dict[str, Any], key: str, path: str | Path, number: int) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: row {number} has no {key!r} text")
    return value.strip()


def load_qa(path: str | Path) -> list[QA]:
    """Rows `{"question", "answer", ["author_index"]}` of a JSONL file, in file order."""
    out = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        index = row.get("author_index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise ValueError(f"{path}: row {number} has a non-integer author_index")
        out.append(
            QA(_text(row, "question", path, number), _text(row, "answer", path, number), index)
        )
    return out


def load_choice_qa(path: str | Path) -> list[ChoiceQA]:
    """Rows `{"question", "answer", "perturbed_answer": [wrong, …]}` (real_authors,
    world_facts). Wrong answers equal to the right one (after folding) are dropped."""
    out = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        answer = _text(row, "answer", path, number)
        raw = row.get("perturbed_answer", [])
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise ValueError(f"{path}: row {number} has a malformed perturbed_answer")
        wrong = [
            str(w).strip() for w in raw if str(w).strip() and skeleton(str(w)) != skeleton(answer)
        ]
        out.append(ChoiceQA(_text(row, "question", path, number), answer, wrong))
    return out


def name_candidates(text: str) -> set[str]:
    """Capitalised runs of two or more words in `text`, and all their contiguous sub-runs.

    Runs break at punctuation other than inner hyphens/apostrophes, so "Taipei, Taiwan" is two
    words, not a name; leading and trailing function words ("What", "The") are dropped and
    possessives are stripped ("Hsiao Yun-Hwa's" → "Hsiao Yun-Hwa").
    """
    found: set[str] = set()
    run: list[str] = []
    end = -1

    def flush() -> None:
        words = list(run)
        while words and words[0].casefold() in _NOT_NAME:
            words.pop(0)
        while words and words[-1].casefold() in _NOT_NAME:
            words.pop()
        for i in range(len(words)):
            for j in range(i + 2, len(words) + 1):
                piece = words[i:j]
                # A possessive ends a name: "Hsiao Yun-Hwa's Father" is not a longer name.
                if any(_POSSESSIVE.search(w) for w in piece[:-1]):
                    continue
                if any(w.casefold() in _NOT_NAME for w in piece):
                    continue
                found.add(" ".join([*piece[:-1], _POSSESSIVE.sub("", piece[-1])]))
        run.clear()

    for match in _CAPITALISED.finditer(text):
        between = text[end : match.start()] if end >= 0 else ""
        if run and not (between.isspace() and "\n" not in between):
            flush()
        run.append(match.group())
        end = match.end()
    if run:
        flush()
    return found


def author_name(rows: Sequence[QA]) -> str:
    """The full name of the author these rows are about (see the module docstring)."""
    if not rows:
        raise ValueError("no rows to find an author's name in")
    counts: Counter[str] = Counter()
    for row in rows:
        # Counted once per row: a name repeated within one answer is no stronger evidence.
        counts.update(name_candidates(f"{row.question}\n{row.answer}"))
    first = skeleton(f"{rows[0].question} {rows[0].answer}")
    named_first = {c: n for c, n in counts.items() if skeleton(c) in first}
    pool = named_first or dict(counts)
    if not pool:
        raise ValueError("no capitalised multi-word name occurs in these rows")
    top = max(pool.values())
    frequent = [c for c, n in pool.items() if n >= _LONGER_NAME_SHARE * top]
    # Longest of the frequent candidates; then the most frequent; then alphabetical (stable).
    return min(frequent, key=lambda c: (-len(c.split()), -pool[c], -len(c), c))


def group_by_author(rows: Iterable[QA]) -> dict[int, list[QA]]:
    grouped: dict[int, list[QA]] = defaultdict(list)
    for row in rows:
        if row.author_index is None:
            raise ValueError("every forget row needs an author_index")
        grouped[row.author_index].append(row)
    return dict(sorted(grouped.items()))


def author_specs(forget_rows: Sequence[QA]) -> dict[int, ForgetSpec]:
    """One `ForgetSpec` per author_index: the author's name, and every row as a fact (the
    answer as the statement to forget, the question kept for probes)."""
    specs = {}
    for index, rows in group_by_author(forget_rows).items():
        facts = [Fact(question=r.question, answer=r.answer) for r in rows]
        specs[index] = ForgetSpec(subject_names=[author_name(rows)], facts=facts)
    return specs
