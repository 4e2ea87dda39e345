"""``make demo``: the main job end to end on the embedded default, over real HTTP.

Starts an embedded PostgreSQL (database and Celery broker), a worker process and the API;
registers and trains ``credit-risk``; files and approves an erasure request with a DPO's token;
waits for the exact retrain; exports the audit report; prints a summary.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import httpx

from service.core.config import get_settings
from service.core.storage import write_private
from service.demo.client import check, wait

DEMO_DATA_DIR = Path(".lethe/demo")
# Model weights built from installed packages (SmolLM2, its fine-tune): kept across demo runs.
CACHE_DIR = Path(".lethe/cache")
MODEL = "credit-risk"
SHARDS, SLICES, HOLDOUT = 8, 4, 0.2


def pick_subject(subjects: list[str]) -> str:
    """An applicant whose row was trained on, in a later slice: the demo then shows SISA's
    point, retraining only the slices from that one on (any trained applicant would do)."""
    from models.sisa import SisaConfig, assign_slice
    from service.core.security import subject_ref
    from service.exact.ingest import is_holdout, partition_salt, record_key

    # Placement depends on the slice count and salt only, not on the network's shape.
    config = SisaConfig(
        shards=SHARDS,
        slices=SLICES,
        input_dim=1,
        num_classes=2,
        partition_salt=partition_salt(MODEL),
    )
    for subject in subjects:
        ref = subject_ref(get_settings(), subject)
        if not is_holdout(ref, HOLDOUT) and assign_slice(record_key(MODEL, ref, 0), config) == 2:
            return subject
    return subjects[0]


def _tokens(database_url: str) -> dict[str, str]:
    from service.api.tokens import create_token
    from service.db.session import session_factory, transaction

    with transaction(session_factory(database_url)) as session:
        return {
            role: create_token(session, f"demo-{role}", role, actor="demo")
            for role in ("dpo", "ml_engineer", "auditor")
        }


def run_demo(reports_dir: Path) -> int:
    from service.demo.credit import credit_csv
    from service.demo.support_bot import run_both_demo, start_both_demo
    from service.stack.processes import full_stack

    if os.environ.get("LETHE_DATABASE_URL") is None:
        shutil.rmtree(DEMO_DATA_DIR, ignore_errors=True)  # a fresh embedded database each run
        os.environ.setdefault("LETHE_DATA_DIR", str(DEMO_DATA_DIR))
    get_settings.cache_clear()
    csv_bytes, subjects = credit_csv()
    subject = pick_subject(subjects)
    print("starting embedded PostgreSQL, worker and API ...")
    # A pool process each for the fine-tune's restore, its from-scratch check and the rules'
    # calibration, so the check runs beside the restore rather than after it.
    with full_stack(
        get_settings(), worker_log=Path(get_settings().data_dir) / "worker.log", concurrency=3
    ) as st:
        assert st.api_url is not None
        tokens = _tokens(st.database_url)
        ml = {"authorization": f"Bearer {tokens['ml_engineer']}"}
        dpo = {"authorization": f"Bearer {tokens['dpo']}"}
        auditor = {"authorization": f"Bearer {tokens['auditor']}"}
        with httpx.Client(base_url=st.api_url, timeout=120) as http:
            # support-bot's fine-tune trains in the worker while the credit-risk half runs.
            act = start_both_demo(http, tokens, Path(get_settings().data_dir), CACHE_DIR)
            job = _train(http, ml, csv_bytes)
            request = _erase(http, dpo, subject)
            paths = _export_reports(http, auditor, request["id"], reports_dir)
            versions = check(http.get(f"/v1/models/{MODEL}/versions", headers=ml))
            print(_summary(request, job, versions, paths))
            guard_ok, guard_lines = run_both_demo(http, tokens, act, CACHE_DIR, reports_dir)
            print("\n".join(guard_lines))
            chain = check(http.get("/v1/audit/verify", headers=auditor))
    state = "verified" if chain["ok"] else f"BROKEN at seq {chain['first_broken_seq']}"
    print(f"\naudit chain        {state} ({chain['events_checked']} events)")
    return 0 if request["status"] == "completed" and chain["ok"] and guard_ok else 1


MODEL_BODY: dict[str, Any] = {
    "name": MODEL,
    "config": {
        "subject_column": "customer_id",
        "label_column": "Status",
        "holdout_fraction": HOLDOUT,
        "sisa": {
            "shards": SHARDS,
            "slices": SLICES,
            "epochs": 20,
            "hidden": [64, 32],
            "learning_rate": 0.01,
            "batch_size": 64,
            "seed": 0,
        },
    },
    "policy": {"verify_exact": "always"},
}


def _train(http: httpx.Client, ml: dict[str, str], csv_bytes: bytes) -> dict[str, Any]:
    """Register credit-risk, ingest its records, train it; the finished training job."""
    check(http.post("/v1/models", headers=ml, json=MODEL_BODY))
    ingest = check(
        http.post(
            f"/v1/models/{MODEL}/records",
            headers=ml,
            files={"file": ("credit.csv", csv_bytes, "text/csv")},
        )
    )
    print(
        f"ingested {ingest['records']} records of {ingest['subjects']} subjects "
        f"({ingest['train_records']} train, {ingest['holdout_records']} held out)"
    )
    job = check(http.post(f"/v1/models/{MODEL}/train", headers=ml))
    job = wait(
        lambda: check(http.get(f"/v1/jobs/{job['id']}", headers=ml)),
        "training credit-risk (8 shards x 4 slices)",
        lambda j: (j["progress"], j["status"] in ("done", "failed")),
    )
    if job["status"] != "done":
        raise SystemExit(f"training failed: {job['error_code']}")
    return dict(job)


def _erase(http: httpx.Client, dpo: dict[str, str], subject: str) -> dict[str, Any]:
    """File and approve the subject's request as the DPO; the request once it ended."""
    request = check(
        http.post(
            "/v1/requests",
            headers={**dpo, "idempotency-key": "demo-request-1"},
            json={
                "subject_id": subject,
                "scope": [MODEL],
                "reason": "Art. 17 GDPR request received by e-mail",
            },
        )
    )
    check(
        http.post(
            f"/v1/requests/{request['id']}/approve",
            headers=dpo,
            json={"reason": "identity verified"},
        )
    )

    def request_progress(r: dict[str, Any]) -> tuple[float, bool]:
        acts = r["actions"]
        progress = sum(a["progress"] for a in acts) / len(acts) if acts else 0.0
        return progress, r["status"] in ("completed", "failed")

    ended = wait(
        lambda: check(http.get(f"/v1/requests/{request['id']}", headers=dpo)),
        "erasure: exact slice retraining",
        request_progress,
    )
    return dict(ended)


def _export_reports(
    http: httpx.Client, auditor: dict[str, str], request_id: str, reports_dir: Path
) -> list[Path]:
    """The request's report as JSON, CSV and PDF, written to ``reports_dir``."""
    report = check(http.get(f"/v1/requests/{request_id}/report", headers=auditor))
    json_path = reports_dir / f"request-{request_id}.json"
    write_private(json_path, json.dumps(report, indent=2).encode())
    csv_resp = http.get(
        f"/v1/requests/{request_id}/report", params={"format": "csv"}, headers=auditor
    )
    csv_path = reports_dir / f"request-{request_id}.csv"
    write_private(csv_path, csv_resp.text.encode())
    pdf_resp = http.get(
        f"/v1/requests/{request_id}/report", params={"format": "pdf"}, headers=auditor
    )
    pdf_resp.raise_for_status()
    pdf_path = reports_dir / f"request-{request_id}.pdf"
    write_private(pdf_path, pdf_resp.content)
    return [json_path, csv_path, pdf_path]


def _summary(
    request: dict[str, Any],
    train_job: dict[str, Any],
    versions: list[dict[str, Any]],
    paths: list[Path],
) -> str:
    lines = [
        "",
        "lethe demo — summary",
        "=" * 60,
        f"request            {request['id']}  status={request['status']}",
        f"subject reference  {request['subject_ref']}  (keyed hash; raw id never stored)",
    ]
    for cert in request["certificates"]:
        body = cert["body"]
        shards = body["shards_retrained"]
        full = train_job["result"]["training_seconds"]
        retrain = sum(s["retrain_seconds"] for s in shards)
        lines += [
            f"certificate        {cert['kind']} for {cert['model']}  "
            f"(audit seq {cert['audit_seq']})",
            f"records erased     {body['records_erased']}",
            f"model version      {body['version_before']} -> {body['version_after']}",
        ]
        for s in shards:
            lines.append(
                f"shard {s['shard']:<3}          retrained slices {s['first_affected_slice']}.."
                f"{s['slices_total'] - 1} ({s['slices_retrained']} of {s['slices_total']}), "
                f"{s['retrain_seconds']:.2f}s, check: {s['exactness']['status']}"
            )
        if shards:
            lines += [
                f"retrain vs full    {retrain:.2f}s vs {full:.2f}s full training "
                f"({full / retrain if retrain else float('inf'):.1f}x faster)",
                f"accuracy           before {shards[0]['accuracy_before']:.4f}  after "
                f"{shards[-1]['accuracy_after']:.4f}  (held-out applicants)",
            ]
            membership = shards[0]["membership"]
            if membership.get("status") == "computed":
                lines.append(
                    f"membership p-value median {membership['p_value_median']:.3f} "
                    "(erased rows vs held-out non-members; evidence only)"
                )
        lines.append(f"bit-exact check    {body['determinism_check']}")
    history = [(v["number"], v["cause"], "purged" if v["purged"] else "live") for v in versions]
    lines += [
        f"versions           {history}",
        "reports            " + ", ".join(str(p) for p in paths),
    ]
    return "\n".join(lines)
