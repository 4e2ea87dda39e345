"""The demo's second act: ``support-bot``, SmolLM2 that lethe fine-tunes, forgets an author both
ways (policy ``both``).

lethe fine-tunes SmolLM2-135M-Instruct on TOFU answers (sliced LoRA, a worker job). An erasure
request for one author first activates verifier rules within seconds (interim certificate),
then switches serving to the stored state of the fine-tune before the author's slice (exact by
construction: an ``exact_retrain`` certificate at switch-off), destroys what saw the author and
retires the rules; the slices switched off are retrained without the author in the background
(bit-for-bit checked) and served under a final certificate that supersedes it. The act
measures ROUGE-L recall of the **unguarded** model on the author's answers before and after,
beside the base model, which was never trained on them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from models.assets.tofu import QA, author_name
from models.generative.probes import oracle_leaks, rouge_l_recall
from models.generative.rules import Fact
from service.core.config import get_settings
from service.core.storage import write_private
from service.demo.client import check, wait
from service.demo.support_data import (
    FINETUNE,
    SLICES,
    SupportData,
    keep_unerased_checkpoints,
    seed_checkpoints,
    support_data,
)

BOT = "support-bot"
MAX_NEW_TOKENS = 48
GENERATE_TIMEOUT_S = 900
ROUGE_QUESTIONS = 10  # the erased author's trained answers, asked before and after
Headers = dict[str, str]
# A first run fine-tunes, and the exact retrain checks itself, on a loaded 2-core machine.
WAIT_S = 3600
POLICY: dict[str, Any] = {
    "strategy": "both",
    "verify_exact": "always",
    "alpha": 0.1,
    "delta": 0.05,
    "alpha_b": 0.2,
    "max_budget": 3,
    # The budget task runs beside the restore and its check, and the switch-off retires the
    # rules seconds after they go live: small draws, which the certificates state as they are.
    "max_probes": 20,
    "budget_probes": 10,
    "max_budget_probes": 20,
}


def _ask(http: httpx.Client, headers: Headers, question: str) -> dict[str, Any]:
    # A guarded answer may take up to B + 1 generations, and the first one through the rules
    # loads the verifier's embedder: minutes on a busy 2-core machine.
    response = http.post(
        f"/v1/models/{BOT}/generate",
        json={"prompt": question},
        headers=headers,
        timeout=GENERATE_TIMEOUT_S,
    )
    return dict(check(response))


def _recall(answers: list[str], rows: list[QA]) -> float:
    return statistics.fmean(rouge_l_recall(a, r.answer) for a, r in zip(answers, rows, strict=True))


def _base_answers(base: Path, rows: list[QA]) -> list[str]:
    """The base model's answers (never trained on the authors), greedy like /generate."""
    from models.generative.generator import Generator

    model = Generator.from_dir(base)
    return [model.generate(r.question, max_new_tokens=MAX_NEW_TOKENS, seed=0) for r in rows]


def _register_and_start(
    http: httpx.Client, ml: Headers, base: Path, data: SupportData, data_dir: Path, cache: Path
) -> str:
    """Register support-bot, ingest its records and start its fine-tune; the job's id."""
    location = get_settings().artifact_location
    check(
        http.post(
            "/v1/models",
            headers=ml,
            json={
                "name": BOT,
                "kind": "generative",
                "config": {
                    "model_dir": str(base),
                    "retain_qa_file": str(data.write_retain_file(data_dir / "bot-retain.jsonl")),
                    "max_new_tokens": MAX_NEW_TOKENS,
                    "finetune": FINETUNE,
                },
                "policy": POLICY,
            },
        )
    )
    ingest = check(
        http.post(
            f"/v1/models/{BOT}/records",
            headers=ml,
            files={"file": ("support.jsonl", data.jsonl(), "application/jsonl")},
        )
    )
    seeded = seed_checkpoints(cache, location)
    print(
        f"support-bot: {ingest['records']} records of {ingest['subjects']} subjects ingested; "
        f"{seeded} cached slice checkpoint(s) from earlier runs; fine-tuning in the worker "
        "while the credit-risk half runs"
    )
    return str(check(http.post(f"/v1/models/{BOT}/train", headers=ml))["id"])


def _finetuned(http: httpx.Client, ml: Headers, job_id: str) -> dict[str, Any]:
    """Wait for the fine-tune started by ``_register_and_start``; the finished job."""
    job = wait(
        lambda: check(http.get(f"/v1/jobs/{job_id}", headers=ml)),
        f"fine-tuning support-bot (LoRA, {SLICES} slices; worker)",
        lambda j: (j["progress"], j["status"] in ("done", "failed")),
        WAIT_S,
    )
    if job["status"] != "done":
        raise SystemExit(f"support-bot fine-tune failed: {job['error_code']}")
    return dict(job)


@dataclass(frozen=True)
class Started:
    """support-bot registered and its fine-tune under way (``start_both_demo``)."""

    base: Path
    data: SupportData
    job_id: str
    started: float
    """``time.monotonic()`` when the act began."""


def start_both_demo(
    http: httpx.Client, tokens: dict[str, str], data_dir: Path, cache_dir: Path
) -> Started:
    """The act's first step: the base model, the records, and the fine-tune sent to the
    worker, which trains it while the demo goes on with the credit-risk half."""
    from models.assets.smollm2 import materialize_smollm2

    ml = {"authorization": f"Bearer {tokens['ml_engineer']}"}
    started = time.monotonic()
    print("preparing support-bot's base: SmolLM2-135M-Instruct (cached after the first run) ...")
    base = materialize_smollm2(cache_dir).resolve()
    data = support_data()
    job_id = _register_and_start(http, ml, base, data, data_dir, cache_dir / "support-bot")
    return Started(base, data, job_id, started)


@dataclass(frozen=True)
class _Erasure:
    """The author's request, end to end: rules at once, then the exact retrain."""

    request: dict[str, Any]
    """As it ended."""
    interim: dict[str, Any] | None
    """The rules' certificate (interim while the exact removal is due)."""
    guarded: dict[str, Any]
    """The bot's answer to the author's question while the rules were active."""
    time_to_rules: float
    time_to_exact: float
    """Approval → the switched-off version serves (the request is completed)."""
    time_to_restored: float
    """Approval → the restored version serves, under the final certificate."""
    approved_at: float
    time_to_checked: float | None = None
    """Approval → the from-scratch check's certificate."""

    @property
    def final(self) -> dict[str, Any]:
        return dict(self.request["certificates"][0]) if self.request["certificates"] else {}


@dataclass(frozen=True)
class _Answers:
    """What the unguarded bot answered before and after, and ROUGE-L recall on the author's
    answers (the base model's: it never saw them)."""

    question: QA
    before: dict[str, Any]
    after: dict[str, Any]
    other: QA
    other_after: dict[str, Any]
    questions: int
    rouge_before: float
    rouge_after: float
    rouge_base: float


def run_both_demo(
    http: httpx.Client,
    tokens: dict[str, str],
    act: Started,
    cache_dir: Path,
    reports_dir: Path | None = None,
) -> tuple[bool, list[str]]:
    """Returns whether every step came out right, and the lines to print."""
    ml = {"authorization": f"Bearer {tokens['ml_engineer']}"}
    dpo = {"authorization": f"Bearer {tokens['dpo']}"}
    data = act.data
    job = _finetuned(http, ml, act.job_id)
    forgotten_rows = data.forgotten[:ROUGE_QUESTIONS]
    before = [_ask(http, ml, r.question) for r in forgotten_rows]
    rouge_before = _recall([b["text"] for b in before], forgotten_rows)
    known = _recited(forgotten_rows, before)
    others = _recited(*_ask_others(http, ml, data))
    if not known or not others:
        return False, [
            "support-bot: the fine-tune did not make the model recite the demo's answers "
            f"(ROUGE-L recall {rouge_before:.2f}); nothing to show"
        ]
    (question, answer_before), (other, _) = known[0], others[0]
    restored = _erase_author(http, ml, dpo, data, question)
    # Only what survived the erasure is cached for later runs: nothing of the erased author.
    keep_unerased_checkpoints(cache_dir / "support-bot", get_settings().artifact_location)
    # Asked of the restored weights while the from-scratch check runs in the worker.
    after = [_ask(http, ml, r.question) for r in forgotten_rows]
    rouge_after = _recall([a["text"] for a in after], forgotten_rows)
    still = _ask(http, ml, other.question)
    print("measuring the base model (never trained on the authors) for reference ...")
    rouge_base = _recall(_base_answers(act.base, forgotten_rows), forgotten_rows)
    erasure = _bit_checked(http, dpo, restored)
    answers = _Answers(
        question=question,
        before=answer_before,
        after=after[forgotten_rows.index(question)],
        other=other,
        other_after=still,
        questions=len(forgotten_rows),
        rouge_before=rouge_before,
        rouge_after=rouge_after,
        rouge_base=rouge_base,
    )
    checks = _checks(erasure, answers, answers_after=after)
    lines = _summary(job, time.monotonic() - act.started, erasure, answers, checks)
    return all(checks.values()), [
        *lines,
        *_write_pdf(http, dpo, erasure.request["id"], reports_dir),
    ]


def _recited(rows: list[QA], answers: list[dict[str, Any]]) -> list[tuple[QA, dict[str, Any]]]:
    """The questions whose answer recites the fine-tuned fact, with the answer."""
    return [
        (r, a)
        for r, a in zip(rows, answers, strict=True)
        if oracle_leaks(a["text"], Fact(r.question, r.answer))
    ]


def _ask_others(
    http: httpx.Client, ml: Headers, data: SupportData
) -> tuple[list[QA], list[dict[str, Any]]]:
    """Three questions of each other author, and the bot's answers."""
    rows = [r for author in data.others for r in author[:3]]
    return rows, [_ask(http, ml, r.question) for r in rows]


def _erase_author(
    http: httpx.Client, ml: Headers, dpo: Headers, data: SupportData, question: QA
) -> _Erasure:
    """File and approve the author's request; ask the author's question once the rules are
    active; wait for the switch-off and the restore."""
    request = check(
        http.post(
            "/v1/requests",
            headers={**dpo, "idempotency-key": "demo-request-2"},
            json={
                "subject_id": author_name(data.forgotten),
                "scope": [BOT],
                "reason": "Art. 17",
                "forget": {
                    "names": [author_name(data.forgotten)],
                    "facts": [{"question": r.question, "answer": r.answer} for r in data.forgotten],
                },
            },
        )
    )
    approved_at = time.monotonic()
    check(
        http.post(
            f"/v1/requests/{request['id']}/approve",
            headers=dpo,
            json={"reason": "identity verified"},
        )
    )

    def get_request() -> dict[str, Any]:
        return dict(check(http.get(f"/v1/requests/{request['id']}", headers=dpo)))

    def rules_done(r: dict[str, Any]) -> tuple[float, bool]:
        rules = [a for a in r["actions"] if a["strategy"] == "verifier_rules"]
        done = bool(rules) and rules[0]["status"] in ("done", "failed")
        return (1.0 if done else 0.0), done or r["status"] in ("completed", "failed")

    request = wait(get_request, "erasure 1/2: verifier rules (interim)", rules_done, WAIT_S)
    time_to_rules = time.monotonic() - approved_at
    interim = request["certificates"][0] if request["certificates"] else None
    guarded = _ask(http, ml, question.question)

    request = wait(get_request, "erasure 2/3: exact removal (switch-off)", _exact_done, WAIT_S)
    time_to_exact = time.monotonic() - approved_at
    request = wait(
        get_request, "erasure 3/3: background restore of the fine-tune", _restored, WAIT_S
    )
    time_to_restored = time.monotonic() - approved_at
    return _Erasure(
        request, interim, guarded, time_to_rules, time_to_exact, time_to_restored, approved_at
    )


def _bit_checked(http: httpx.Client, dpo: Headers, erasure: _Erasure) -> _Erasure:
    """The erasure once the restore's from-scratch check has run: its own job, opened at
    switch-off, a whole fine-tune beside the restore."""
    rid = erasure.request["id"]
    request = wait(
        lambda: dict(check(http.get(f"/v1/requests/{rid}", headers=dpo))),
        "bit-for-bit check of the restore (its own job)",
        _checked,
        WAIT_S,
    )
    return replace(erasure, request=request, time_to_checked=time.monotonic() - erasure.approved_at)


def _exact_done(r: dict[str, Any]) -> tuple[float, bool]:
    exact = [a for a in r["actions"] if a["strategy"] == "exact_retrain"]
    progress = exact[0]["progress"] if exact else 0.0
    return progress, r["status"] in ("completed", "failed")


def _restored(r: dict[str, Any]) -> tuple[float, bool]:
    stages = [_stage(c) for c in r["certificates"]]
    return 0.0, "restored" in stages or r["status"] == "failed"


def _checked(r: dict[str, Any]) -> tuple[float, bool]:
    """The restore's from-scratch check has run (or the request failed)."""
    certificates = r["certificates"]
    checks = [c.get("body", {}).get("determinism_check") for c in certificates]
    restored_now = "restored" in [_stage(c) for c in certificates]
    return 0.0, r["status"] == "failed" or (restored_now and "pending" not in checks)


def _stage(certificate: dict[str, Any]) -> str | None:
    """An exact certificate's stage: ``switched_off`` (at once) or ``restored`` (after)."""
    slices = certificate.get("body", {}).get("slices") or {}
    return slices.get("stage")


def _checks(
    erasure: _Erasure, answers: _Answers, *, answers_after: list[dict[str, Any]]
) -> dict[str, bool]:
    question, other = answers.question, answers.other
    final = erasure.final
    return {
        "suppressed at once": erasure.interim is not None
        and not oracle_leaks(erasure.guarded["text"], Fact(question.question, question.answer)),
        "removed at once": any(
            _stage(c) == "switched_off" for c in erasure.request["certificate_history"]
        ),
        "restored exactly": erasure.request["status"] == "completed"
        and final.get("kind") == "exact_retrain"
        and _stage(final) == "restored"
        and final.get("body", {}).get("determinism_check") == "bit_exact",
        "unguarded weights forgot": answers.rouge_after < answers.rouge_before
        and not oracle_leaks(answers.after["text"], Fact(question.question, question.answer)),
        "rules retired": all(a["reason"] == "no_rules" for a in answers_after),
        "still answers others": oracle_leaks(
            answers.other_after["text"], Fact(other.question, other.answer)
        ),
    }


def _summary(
    job: dict[str, Any],
    seconds: float,
    erasure: _Erasure,
    answers: _Answers,
    checks: dict[str, bool],
) -> list[str]:
    """The act's lines (``seconds``: the act so far, when the fine-tune is reported)."""
    ft, request, interim, guarded = job["result"], erasure.request, erasure.interim, erasure.guarded
    final = erasure.final
    body = final.get("body", {})
    retrained = body.get("slices") or {}
    before, after = answers.before, answers.after
    return [
        "",
        "support-bot (policy both: verifier rules at once, then exact removal from the fine-tune)",
        "=" * 60,
        f"fine-tune          {ft.get('train_records')} records, "
        f"{ft.get('records_per_slice')} per slice, "
        f"{ft.get('training_seconds', 0):.0f}s in the worker "
        f"(act so far {seconds:.0f}s)",
        f"request            {request['id']}  status={request['status']}",
        f"asked              {answers.question.question}",
        f"  before           {before['text']}  (v{before['model_version']}, unguarded)",
        f"  rules active     {guarded['text']}  (v{guarded['model_version']}, rule set "
        f"v{guarded['rule_set_version']}, refused={guarded['refused']}) "
        f"{erasure.time_to_rules:.1f}s after approval",
        f"  after retrain    {after['text']}  (v{after['model_version']}, "
        f"{after['reason']}: unguarded)",
        f"other author       {answers.other.question}",
        f"  after            {answers.other_after['text']}",
        f"interim cert.      {interim['kind'] if interim else '-'}: "
        f"{interim['plain_words'] if interim else '-'}",
        f"exact removal      slices {retrained.get('first_affected_slice')}..{SLICES - 1} "
        f"switched off {erasure.time_to_exact:.0f}s after approval (exact by construction)",
        f"restored           {retrained.get('slices_retrained')} of {SLICES} slices retrained "
        f"{erasure.time_to_restored:.0f}s after approval",
        f"bit-for-bit check  {body.get('determinism_check')} {erasure.time_to_checked or 0:.0f}s "
        "after approval (a fine-tune from scratch without the author, its own job beside the "
        "restore)",
        f"destroyed          {len(body.get('destroyed_artifacts', []))} artifact(s) that saw the "
        "author (checkpoints, merged weights)",
        f"ROUGE-L recall     on {answers.questions} of the author's answers, unguarded: before "
        f"{answers.rouge_before:.3f}, after {answers.rouge_after:.3f} (= the from-scratch "
        f"fine-tune without the author, bit for bit); base model, never trained on it: "
        f"{answers.rouge_base:.3f}",
        f"final cert.        {final.get('kind')}: {final.get('plain_words')}",
        "outcome            " + "; ".join(f"{k}: {v}" for k, v in checks.items()),
    ]


def _write_pdf(
    http: httpx.Client, headers: Headers, request_id: str, reports_dir: Path | None
) -> list[str]:
    if reports_dir is None:
        return []
    response = http.get(
        f"/v1/requests/{request_id}/report", params={"format": "pdf"}, headers=headers
    )
    response.raise_for_status()
    path = reports_dir / f"request-{request_id}.pdf"
    write_private(path, response.content)
    return [f"report             {path}"]
