"""Load on the HTTP API as clients produce it; prints one JSON object on stdout.

``lethe serve`` (API + its worker) runs on a throw-away database on the local PostgreSQL server.
Per concurrency level, every filing is sent at once (10 % of them repeat an earlier idempotency
key with the same body, a few with a different body), while a prober calls ``/healthz`` every
0.25 s. Reported per level: ``created`` (rows in the database once the service has settled) vs
``expected`` (distinct keys), the ``status_histogram`` (``timeout`` and ``error`` are client-side),
``p50_s``/``p95_s`` latencies, ``healthz_max_s`` and ``filings_per_s``; then a flood of
unauthenticated filings. The floor is the same filing inserted directly through the service
function (with the audit chain), one transaction each: ``ratio_to_floor`` compares the two.

    python bench/api_load.py --quick     # levels 10 and 100, a 200-request flood
    python bench/api_load.py             # levels 10, 100 and 1000, a 1000-request flood
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bench._stack import (
    LOCAL_SERVER,
    Service,
    percentile,
    throwaway_database,
    tokens,
    wait_healthy,
)
from bench._stack import lethe_env as make_env

SIZES = {
    "quick": {"levels": [10, 100], "flood": 200, "timeout": 60.0, "settle": 120.0, "floor": 200},
    "full": {
        "levels": [10, 100, 1000],
        "flood": 1000,
        "timeout": 120.0,
        "settle": 600.0,
        "floor": 1000,
    },
}


def _plan(level: int, run: str) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """(idempotency key, body) per filing, and the number of distinct keys (= expected rows)."""
    rng = random.Random(level)
    repeats = level // 10
    distinct = level - repeats
    firsts = [
        (f"{run}-{level}-{i}", {"subject_id": f"{run}-L{level}-S{i}", "reason": "art 17"})
        for i in range(distinct)
    ]
    different = max(1, repeats // 10) if repeats else 0
    plan = list(firsts)
    for j in range(repeats):
        key, body = firsts[rng.randrange(distinct)]
        if j < different:
            body = {**body, "reason": "a different body under the same key"}
        plan.append((key, body))
    rng.shuffle(plan)
    return plan, distinct


def _probe_health(url: str, stop: Any, results: Any) -> None:
    """In a process of its own: a thread beside the burst's 1,000 coroutines would wait for
    this client's GIL and count that wait as the server's latency."""
    worst: list[float] = []
    failed = 0
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                ok = client.get(f"{url}/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            worst.append(time.monotonic() - start)
            failed += not ok
            stop.wait(0.25)
    results.put((worst, failed))


async def _burst(
    url: str, requests: list[tuple[dict[str, str], dict[str, Any]]], timeout: float
) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def one(headers: dict[str, str], body: dict[str, Any]) -> None:
            start = time.monotonic()
            try:
                r = await client.post(f"{url}/v1/requests", json=body, headers=headers)
                statuses[str(r.status_code)] += 1
            except httpx.TimeoutException:
                statuses["timeout"] += 1
            except httpx.HTTPError:
                statuses["error"] += 1
            latencies.append(time.monotonic() - start)

        prober = context.Process(target=_probe_health, args=(url, stop, results))
        prober.start()
        start = time.monotonic()
        await asyncio.gather(*(one(h, b) for h, b in requests))
        wall = time.monotonic() - start
        stop.set()
        health, health_failed = results.get(timeout=60)
        prober.join()
    return {
        "status_histogram": dict(sorted(statuses.items())),
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "healthz_max_s": round(max(health), 3) if health else None,
        "healthz_probes": len(health),
        "healthz_failed": health_failed,
        "wall_s": round(wall, 3),
    }


def _count(database_url: str, like: str) -> int:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM erasure_requests WHERE idempotency_key LIKE %s", (like,)
        ).fetchone()
    return int(row[0]) if row else 0


def _settled_count(database_url: str, like: str, url: str, settle: float) -> tuple[int, float]:
    """Rows once the service answers again and the count stopped moving (late writes count)."""
    start = time.monotonic()
    with contextlib.suppress(TimeoutError):
        wait_healthy(url, settle)
    last = _count(database_url, like)
    while time.monotonic() - start < settle:
        time.sleep(2)
        now = _count(database_url, like)
        if now == last:
            break
        last = now
    return last, round(time.monotonic() - start, 2)


def _floor(database_url: str, n: int, run: str) -> float:
    """Filings per second through the service function itself, one transaction each."""
    from service.core.config import Settings
    from service.db.session import session_factory, transaction
    from service.erasure.filing import NewRequest, file_request

    settings = Settings(database_url=database_url)
    factory = session_factory(database_url)
    start = time.monotonic()
    for i in range(n):
        with transaction(factory) as session:
            new = NewRequest(f"{run}-floor-S{i}", "art 17", None, None, f"{run}-floor-{i}")
            file_request(session, settings, new, "dpo:bench")
    return n / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--server", default=LOCAL_SERVER, help="PostgreSQL server (loopback)")
    parser.add_argument("--levels", default=None, help="concurrency levels, e.g. 1000")
    args = parser.parse_args()
    sizes: dict[str, Any] = dict(SIZES["quick" if args.quick else "full"])
    if args.levels:
        sizes["levels"] = [int(level) for level in args.levels.split(",")]
    run = f"r{int(time.time())}"
    out: dict[str, Any] = {
        "benchmark": "api_load",
        "mode": "quick" if args.quick else "full",
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "levels": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="lethe-bench-") as tmp,
        throwaway_database(args.server) as db,
    ):
        data = Path(tmp)
        env = make_env(db, data)
        tok = tokens(env, ("dpo",))
        floor = _floor(db, int(sizes["floor"]), run)
        out["floor_filings_per_s"] = round(floor, 2)
        with open(data / "serve.log", "wb") as log:
            service = Service(env, log, with_worker=True)
            try:
                dpo = {"authorization": f"Bearer {tok['dpo']}"}
                for level in sizes["levels"]:
                    plan, expected = _plan(level, run)
                    reqs = [({**dpo, "idempotency-key": k}, b) for k, b in plan]
                    result = asyncio.run(_burst(service.url, reqs, float(sizes["timeout"])))
                    created, settle_s = _settled_count(
                        db, f"{run}-{level}-%", service.url, float(sizes["settle"])
                    )
                    fps = created / result["wall_s"] if result["wall_s"] else 0.0
                    out["levels"].append(
                        {
                            "concurrency": level,
                            "created": created,
                            "expected": expected,
                            **result,
                            "settle_s": settle_s,
                            "filings_per_s": round(fps, 2),
                            "ratio_to_floor": round(fps / floor, 3) if floor else None,
                        }
                    )
                    print(json.dumps(out["levels"][-1]), file=sys.stderr)
                n = int(sizes["flood"])
                bad = [
                    (
                        {
                            "authorization": "Bearer not-a-token",
                            "idempotency-key": f"{run}-flood-{i}",
                        },
                        {"subject_id": f"{run}-flood-S{i}", "reason": "x"},
                    )
                    for i in range(n)
                ]
                flood = asyncio.run(_burst(service.url, bad, float(sizes["timeout"])))
                created, settle_s = _settled_count(
                    db, f"{run}-flood-%", service.url, float(sizes["settle"])
                )
                out["unauthenticated_flood"] = {
                    "requests": n,
                    "created": created,
                    "expected": 0,
                    **flood,
                    "settle_s": settle_s,
                }
            finally:
                service.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
