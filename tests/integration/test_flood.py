"""A flood against the real app under uvicorn on a real PostgreSQL: unauthenticated and
authenticated bursts at once. Every answer is 401/2xx/409/503 (never 500), /healthz answers
throughout, and exactly the distinct filings are created, once each."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from service.core.config import Settings
from service.stack.processes import free_port, served
from tests.support.db import fresh_database

pytestmark = pytest.mark.integration
UNAUTHENTICATED, FILINGS, DISTINCT = 300, 200, 180


@pytest.fixture(scope="module")
def server(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from service.api.tokens import create_token
    from service.app.factory import create_app
    from service.db.session import session_factory, transaction

    tmp: Path = tmp_path_factory.mktemp("flood")
    with fresh_database(pg_server, prefix="lethe_flood") as url:
        settings = Settings(
            database_url=url,
            broker_url="memory://",
            data_dir=tmp,
            environment="test",
            # Few slots and a short queue, so that back-pressure (503) is exercised too.
            api_max_inflight=2,
            api_max_queued=40,
            api_queue_timeout_seconds=20,
        )
        with transaction(session_factory(url)) as s:
            token = create_token(s, "flood-dpo", "dpo", actor="test")
        port = free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="error"
        )
        with served(config):
            yield {"url": f"http://127.0.0.1:{port}", "db": url, "token": token}


async def _flood(url: str, token: str) -> tuple[Counter[int], list[int], list[float]]:
    first: Counter[int] = Counter()
    finals: list[int] = []
    health: list[float] = []
    stop = asyncio.Event()
    # No keep-alive: a reused connection the server is closing for idleness would be a client
    # race (a reset POST), not the server's answer.
    limits = httpx.Limits(
        max_connections=UNAUTHENTICATED + FILINGS + 4, max_keepalive_connections=0
    )
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def probe() -> None:
            while not stop.is_set():
                start = time.monotonic()
                r = await client.get("/healthz")
                assert r.status_code == 200
                health.append(time.monotonic() - start)
                await asyncio.sleep(0.1)

        async def intruder(i: int) -> None:
            # A large body too: it must be refused from the headers, not read.
            r = await client.post(
                "/v1/requests",
                headers={"authorization": "Bearer not-a-token"},
                json={"subject_id": f"x{i}", "reason": "r" * 4000},
            )
            first[r.status_code] += 1
            finals.append(r.status_code)

        async def filer(i: int) -> None:
            key = i % DISTINCT  # the last 20 repeat an earlier key with the same body
            body = {"subject_id": f"flood-S{key}", "reason": "art 17"}
            headers = {"authorization": f"Bearer {token}", "idempotency-key": f"flood-{key}"}
            for attempt in range(120):
                r = await client.post("/v1/requests", headers=headers, json=body)
                if attempt == 0:
                    first[r.status_code] += 1
                if r.status_code not in (409, 503):
                    break
                # Back-pressure says when to come back; a concurrent duplicate key says retry.
                await asyncio.sleep(float(r.headers.get("retry-after", "0.2")))
            finals.append(r.status_code)

        prober = asyncio.create_task(probe())
        await asyncio.gather(
            *(intruder(i) for i in range(UNAUTHENTICATED)), *(filer(i) for i in range(FILINGS))
        )
        stop.set()
        await prober
    return first, finals, health


def test_flood(server: dict[str, Any]) -> None:
    first, finals, health = asyncio.run(_flood(server["url"], server["token"]))
    assert set(first) <= {200, 201, 401, 409, 503}, first
    assert first[401] == UNAUTHENTICATED
    assert Counter(finals)[401] == UNAUTHENTICATED
    assert set(finals) - {401} <= {200, 201}, Counter(finals)
    # /healthz answered throughout (the bound is generous: a busy 2-core machine).
    assert health and max(health) < 10, max(health)
    engine = create_engine(server["db"])
    with engine.connect() as conn:
        created = conn.execute(
            text("SELECT count(*) FROM erasure_requests WHERE idempotency_key LIKE 'flood-%'")
        ).scalar_one()
        events = conn.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'request.received'")
        ).scalar_one()
    engine.dispose()
    assert created == DISTINCT and events == DISTINCT
    assert Counter(finals)[201] == DISTINCT
