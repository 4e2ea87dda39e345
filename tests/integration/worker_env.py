"""The environment a real `lethe worker` process of an integration test runs in."""

from __future__ import annotations

import os
from pathlib import Path


def broker_from_env() -> str | None:
    """LETHE_TEST_BROKER_URL (e.g. Redis), or None for the database broker."""
    return os.environ.get("LETHE_TEST_BROKER_URL")


def worker_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any LETHE_ setting of its own, pointed at the test's
    database, artifact folder and broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(
        LETHE_ENVIRONMENT="test",
        LETHE_DATABASE_URL=database_url,
        LETHE_ARTIFACT_URL=str(data_dir / "artifacts"),
        LETHE_DATA_DIR=str(data_dir),
        LETHE_LOG_LEVEL="INFO",
        # The test process's event keys: every process of one deployment shares them.
        LETHE_AUDIT_MAC_KEYS=os.environ.get("LETHE_AUDIT_MAC_KEYS", ""),
        **extra,
    )
    broker = broker_from_env()
    if broker:
        env["LETHE_BROKER_URL"] = broker
    return env
