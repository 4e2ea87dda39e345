"""Issue-10 figures of bench/guard.py, kept apart from the main script: probe-family prompts for
test questions, author grouping of any Q/A file, false flags with the prompt, the realized miss
rate of λ on the model's own leaks with its exact upper bound, and the early exit's calibration
from the same probes that calibrate B."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models.assets.tofu import QA
from models.conformal import ExitCalibration, calibrate_exit, clopper_pearson_upper
from models.generative.matching import mask_identifiers
from models.generative.normalize import skeleton
from models.generative.probes import (
    FORMAT_SHIFTS,
    PROBE_FAMILIES,
    describe_subject,
    oracle_leaks,
    paraphrase_question,
)
from models.generative.refinement import RefinementResult, exit_calibration_point
from models.generative.rules import Fact
from models.generative.verifier import Verifier

AUTHOR_RUN = 20


def group_rows(rows: Sequence[QA], run: int = AUTHOR_RUN) -> list[QA]:
    """Rows with an author index: their own `author_index` when every row has one, else runs
    of `run` consecutive rows (how TOFU-style files list authors)."""
    if all(r.author_index is not None for r in rows):
        return list(rows)
    return [QA(r.question, r.answer, i // run) for i, r in enumerate(rows)]


def family_prompts(facts: Sequence[Fact], index: int, identifiers: Sequence[str]) -> dict[str, str]:
    """One prompt per probe family for the test fact `facts[index]` (direct: as filed).

    The same generic constructions as `build_probes` (nothing written for TOFU): the first
    rule-based paraphrase, the subject replaced by a description from its other facts' key
    spans, and one of the format shifts (chosen by the index, so all three are used)."""
    question = facts[index].question or ""
    out = {"direct": question}
    paraphrases = paraphrase_question(question)
    if paraphrases:
        out["paraphrased"] = paraphrases[0]
    names_it = any(skeleton(i) in skeleton(question) for i in identifiers if skeleton(i))
    description = describe_subject(facts, index, identifiers) if names_it else None
    if description is not None:
        out["indirect"] = mask_identifiers(question, list(identifiers), description)
    out["format_shift"] = FORMAT_SHIFTS[index % len(FORMAT_SHIFTS)].format(q=question)
    return out


def flag_rate(
    verifier: Verifier, answers: Sequence[str], prompts: Sequence[str], lam: float
) -> float | None:
    """Share of harmless answers flagged at λ, each scored with the question it answers."""
    if not answers:
        return None
    verdicts = verifier.score_many(list(answers), list(prompts))
    return sum(v.score >= lam for v in verdicts) / len(verdicts)


def realized_miss(
    leaks: Sequence[tuple[str, str, Fact]], verifier: Verifier, lam: float | None, delta: float
) -> dict[str, Any]:
    """Miss rate of λ on (response, prompt, fact) triples the oracle says leak, with the exact
    one-sided (1 − δ) Clopper–Pearson upper bound. None of them was used to calibrate λ."""
    unique = {(t, p): f for t, p, f in leaks if oracle_leaks(t, f, given=p)}
    if lam is None or not unique:
        return {"n_leaking": len(unique), "missed": None, "rate": None, "upper_bound": None}
    texts = [t for t, _ in unique]
    prompts = [p for _, p in unique]
    scores = [v.score for v in verifier.score_many(texts, prompts)]
    missed = sum(s < lam for s in scores)
    return {
        "n_leaking": len(texts),
        "missed": missed,
        "rate": missed / len(texts),
        "upper_bound": clopper_pearson_upper(missed, len(texts), delta),
        "confidence": 1 - delta,
    }


def exit_from_probes(
    results: Sequence[RefinementResult], alpha_b: float, delta: float
) -> tuple[ExitCalibration, dict[str, Any]]:
    """The early exit calibrated on B's probe runs (maximum budget, no exit)."""
    points = [p for p in (exit_calibration_point(r) for r in results) if p is not None]
    rescued = [s for s, ok in points if ok]
    unrescued = [s for s, ok in points if not ok]
    cal = calibrate_exit(rescued, unrescued, alpha_b, delta)
    detail = {
        "rescued": len(rescued),
        "unrescued": len(unrescued),
        "threshold": cal.threshold,
        "certified": cal.certified,
        "reason": cal.reason,
        "unrescued_exit_rate_in_sample": cal.unrescued_exit_rate,
    }
    return cal, detail


def by_family(
    flags: Sequence[tuple[str, bool]],
) -> dict[str, float | None]:
    """Rate of True per family, for every family (None when it has no item)."""
    out: dict[str, float | None] = {}
    for family in PROBE_FAMILIES:
        values = [v for f, v in flags if f == family]
        out[family] = sum(values) / len(values) if values else None
    return out


def mean_or_none(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None
