"""The audit log at scale: verification (full and incremental), period exports, a request report.

Builds an audit log of N authenticated events (hash chain + HMAC, exactly as ``append_event``
computes them, loaded with COPY), signs a checkpoint every ``--checkpoint-every`` events into a
write-once folder store, then measures with lethe's own functions:

- full verification (``verify_log``: chain + MACs + every checkpoint), beside the baseline of
  the chain alone (hashes, no MACs, no checkpoints: what the log offered before);
- incremental verification of ``--increment`` new events after a full one, beside a full one;
- a ``--period``-event period as JSON, CSV and PDF (``period_report`` + the renderers);
- request reports (``request_report``, JSON) for ``--reports`` random requests: p50 and p95.

Targets (issue 27, this 2-core machine, 1,000,000 events): full ≤ 20 s, incremental of 1,000
new events ≤ 0.2 s, a request report p95 ≤ 300 ms, a 100,000-event CSV export ≤ 10 s.

    python bench/audit.py --events 1000000 > bench/results/audit.json

Needs a PostgreSQL server (``--server``, default the local one); the database is thrown away.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import LOCAL_SERVER, throwaway_database

_ACTIONS = ("request.received", "request.approved", "certificate.issued", "request.completed")
_START = datetime(2026, 1, 1, tzinfo=UTC)


def log(message: str) -> None:
    print(f"[audit-bench] {message}", file=sys.stderr, flush=True)


def _details(action: str, request_id: uuid.UUID, i: int) -> dict[str, Any]:
    if action == "request.received":
        return {"subject_ref": f"sub_{request_id.hex[:24]}", "scope": "all", "due_at": None}
    if action == "certificate.issued":
        body = {
            "kind": "exact_retrain",
            "model": "credit",
            "records_erased": {"train": 1 + i % 3, "holdout": 0},
            "shards_retrained": [{"shard": i % 8, "first_affected_slice": 1 + i % 4}],
            "version_before": 1,
            "version_after": 2,
            "determinism_check": "bit_exact",
        }
        return {"kind": "exact_retrain", "body_sha256": "0" * 64, "certificate": body}
    if action == "request.completed":
        return {"outcome": "erased", "overdue": False}
    return {"reason": "art 17"}


def _rows(start_seq: int, count: int, prev_hash: str, keyring: Any) -> Iterator[tuple[Any, ...]]:
    """``count`` events after ``start_seq``, four per request, as ``append_event`` makes them."""
    from service.audit.chain import canonical, chain_hash

    request_id = uuid.uuid4()
    for seq in range(start_seq + 1, start_seq + count + 1):
        action = _ACTIONS[seq % len(_ACTIONS)]
        if action == "request.received":
            request_id = uuid.uuid4()
        occurred_at = _START + timedelta(seconds=seq)
        details = _details(action, request_id, seq)
        row = {
            "seq": seq,
            "occurred_at": occurred_at,
            "actor": "dpo-token" if action != "certificate.issued" else "worker",
            "action": action,
            "target_type": "request",
            "target_id": str(request_id),
            "request_id": request_id,
            "details": details,
        }
        digest = chain_hash(prev_hash, canonical(**row))
        yield (*row.values(), prev_hash, digest, keyring.mac(digest))
        prev_hash = digest


def load(url: str, anchor: Any, after: int, count: int, head: str, every: int) -> str:
    """COPY ``count`` events after ``after``; a checkpoint every ``every`` events (and the head)."""
    import psycopg
    from psycopg.types.json import Jsonb
    from sqlalchemy.engine import make_url

    from service.audit.keys import current_keyring

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    columns = "seq, occurred_at, actor, action, target_type, target_id, request_id, details, "
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY audit_events ({columns} prev_hash, hash, mac) FROM STDIN") as copy:
            for row in _rows(after, count, head, current_keyring()):
                copy.write_row((*row[:7], Jsonb(row[7]), *row[8:]))
                head = row[9]
                if row[0] % every == 0 or row[0] == after + count:
                    anchor.write(anchor.sign(row[0], head))
        conn.commit()
    return head


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def chain_only(session: Any) -> float:
    """The baseline: recompute every hash and link, nothing else (the log before issue 27)."""
    from sqlalchemy import select

    from service.audit.chain import ROW_COLUMNS, canonical, chain_hash

    started = time.perf_counter()
    prev = "0" * 64
    rows = session.execute(select(*ROW_COLUMNS[:-1]).order_by(ROW_COLUMNS[0]))
    for r in rows.yield_per(5000):
        body = canonical(
            seq=r.seq,
            occurred_at=r.occurred_at,
            actor=r.actor,
            action=r.action,
            target_type=r.target_type,
            target_id=r.target_id,
            request_id=r.request_id,
            details=r.details,
        )
        assert r.prev_hash == prev and chain_hash(prev, body) == r.hash
        prev = r.hash
    return time.perf_counter() - started


def verification(factory: Any, anchor: Any, args: argparse.Namespace, url: str) -> dict[str, Any]:
    from sqlalchemy import func, select

    from service.audit.verify import verify_log
    from service.db.tables import AuditEvent

    with factory() as s:
        baseline = chain_only(s)
        full_s, full = timed(lambda: verify_log(s, anchor))
        assert full.ok, full.as_dict()
        log(f"full {full_s:.1f} s (chain only {baseline:.1f} s)")
        head = s.execute(select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()))
        last_seq, last_hash = head.first() or (0, "0" * 64)
        s.rollback()
    load(url, anchor, int(last_seq), args.increment, str(last_hash), args.checkpoint_every)
    anchor._refresh(force=True)  # what the periodic listing does; not part of the figure
    with factory() as s:
        inc_s, inc = timed(lambda: verify_log(s, anchor, incremental=True))
        assert inc.ok and inc.events_checked == args.increment, inc.as_dict()
        total = s.scalar(select(func.count()).select_from(AuditEvent))
    log(f"incremental {inc_s * 1000:.0f} ms for {args.increment} new events")
    return {
        "events": total,
        "checkpoints": full.checkpoints_checked,
        "full_s": round(full_s, 3),
        "baseline_chain_only_s": round(baseline, 3),
        "full_target_s": 20.0,
        "full_met": full_s <= 20.0,
        "incremental_new_events": args.increment,
        "incremental_s": round(inc_s, 4),
        "incremental_target_s": 0.2,
        "incremental_met": inc_s <= 0.2,
        "incremental_vs_full": round(full_s / inc_s, 1) if inc_s else None,
    }


def exports(factory: Any, anchor: Any, args: argparse.Namespace) -> dict[str, Any]:
    from service.reports.build import events_csv, period_report
    from service.reports.pdf import period_pdf

    start = _START + timedelta(seconds=args.events // 2)
    until = start + timedelta(seconds=args.period)
    with factory() as s:
        report_s, data = timed(lambda: period_report(s, start, until, anchor))
        s.commit()
    assert len(data["events"]) == args.period, len(data["events"])
    json_s, body = timed(lambda: json.dumps(data))
    csv_s, csv = timed(lambda: events_csv(data["events"]))
    out: dict[str, Any] = {
        "period_events": len(data["events"]),
        "period_requests": len(data["requests"]),
        "build_s": round(report_s, 3),
        "json_s": round(report_s + json_s, 3),
        "json_bytes": len(body),
        "csv_s": round(report_s + csv_s, 3),
        "csv_bytes": len(csv),
        "csv_target_s": 10.0,
        "csv_met": report_s + csv_s <= 10.0,
        "note": "each export builds the period report (verification included) and renders it",
    }
    log(f"period build {report_s:.1f} s, csv +{csv_s:.1f} s, json +{json_s:.1f} s")
    if args.pdf_period:
        # The PDF lists every event: measured on a shorter period (--pdf-period), said so.
        pdf_until = start + timedelta(seconds=args.pdf_period)
        with factory() as s:
            pdf_build_s, pdf_data = timed(lambda: period_report(s, start, pdf_until, anchor))
            s.commit()
        pdf_s, pdf = timed(lambda: period_pdf(pdf_data))
        out.update(
            pdf_period_events=len(pdf_data["events"]),
            pdf_s=round(pdf_build_s + pdf_s, 3),
            pdf_bytes=len(pdf),
        )
        log(f"pdf of {len(pdf_data['events'])} events: {pdf_build_s + pdf_s:.1f} s")
    return out


def request_reports(factory: Any, anchor: Any, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    from sqlalchemy import select

    from service.db.tables import AuditEvent
    from service.reports.build import request_report

    rng = random.Random(0)
    times = []
    with factory() as s:
        ids = [
            s.scalar(select(AuditEvent.request_id).where(AuditEvent.seq == seq))
            for seq in rng.sample(range(4, args.events, 4), args.reports)
        ]
        for request_id in ids:
            elapsed, _ = timed(lambda r=request_id: json.dumps(request_report(s, r, anchor)))
            times.append(elapsed)
        s.commit()
    p95 = float(np.percentile(times, 95))
    log(f"request report p95 {p95 * 1000:.0f} ms")
    return {
        "reports": len(times),
        "p50_ms": round(float(np.percentile(times, 50)) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "target_p95_ms": 300.0,
        "met": p95 <= 0.3,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--increment", type=int, default=1000)
    parser.add_argument("--period", type=int, default=100_000)
    parser.add_argument("--reports", type=int, default=50)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--pdf-period", type=int, default=10_000, help="0: no PDF")
    parser.add_argument("--server", default=os.environ.get("LETHE_TEST_DATABASE_URL", LOCAL_SERVER))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lethe-audit-bench-") as tmp:
        os.environ.update(LETHE_ENVIRONMENT="development", LETHE_DATA_DIR=tmp)
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from service.audit.anchor import Anchor
        from service.audit.store import FolderStore
        from service.db.session import session_factory

        anchor = Anchor(Ed25519PrivateKey.generate(), FolderStore(Path(tmp) / "store"))
        with throwaway_database(args.server, prefix="lethe_audit_bench") as url:
            load_s, _ = timed(
                lambda: load(url, anchor, 0, args.events, "0" * 64, args.checkpoint_every)
            )
            log(f"loaded {args.events} events in {load_s:.0f} s")
            factory = session_factory(url)
            output = {
                "verification": verification(factory, anchor, args, url),
                "exports": exports(factory, anchor, args),
                "request_report": request_reports(factory, anchor, args),
                "config": {
                    "events": args.events,
                    "increment": args.increment,
                    "period": args.period,
                    "pdf_period": args.pdf_period,
                    "checkpoint_every": args.checkpoint_every,
                    "checkpoint_store": "folder (write-once)",
                    "load_s": round(load_s, 1),
                },
                "context": {
                    "runtime_s": round(time.perf_counter() - started, 1),
                    "cpu_count": os.cpu_count(),
                    "load_average": os.getloadavg(),
                    "python": platform.python_version(),
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            }
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
