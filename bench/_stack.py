"""Shared by the reliability benchmarks: throw-away databases and lethe's own processes, started
the way an operator starts them (``python -m service.cli ...`` from this checkout), loopback only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin(server: str) -> str:
    url = make_url(server).set(drivername="postgresql", database="postgres")
    return url.render_as_string(hide_password=False)


@contextmanager
def throwaway_database(server: str = LOCAL_SERVER, prefix: str = "lethe_bench") -> Iterator[str]:
    """A fresh database with lethe's schema, dropped afterwards (even after a crash mid-run)."""
    sys.path.insert(0, str(ROOT))
    from service.stack.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(_admin(server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def lethe_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(
        LETHE_ENVIRONMENT="development",
        LETHE_DATABASE_URL=database_url,
        LETHE_DATA_DIR=str(data_dir),
        LETHE_ARTIFACT_URL=str(data_dir / "artifacts"),
        LETHE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra)
    return env


def lethe(*args: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", *args]


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    out = subprocess.run(
        lethe(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"lethe {args[0]} failed: {out.stderr[-2000:]}")
    return out.stdout.strip()


def tokens(env: dict[str, str], roles: tuple[str, ...]) -> dict[str, str]:
    return {r: cli(env, "token", "create", f"bench-{r}", "--role", r) for r in roles}


class Service:
    """``lethe serve`` in its own process group; stop() sends SIGTERM, then SIGKILL."""

    def __init__(
        self, env: dict[str, str], log: IO[bytes], *, with_worker: bool, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        flag = "--with-worker" if with_worker else "--no-with-worker"
        self.proc = subprocess.Popen(
            lethe("serve", "--host", "127.0.0.1", "--port", str(self.port), flag),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_healthy(self.url, 120, self.proc)

    def stop(self) -> None:
        stop_group(self.proc)


def stop_group(proc: subprocess.Popen[Any], grace: float = 30) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with _suppress():
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def _suppress() -> Iterator[None]:
    with suppress(ProcessLookupError):
        yield


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> float:
    """Seconds until /healthz answered 200 (raises past the timeout)."""
    start = time.monotonic()
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{url} not healthy after {timeout}s")
        time.sleep(0.2)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 4)
