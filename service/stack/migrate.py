"""Running Alembic from code, wherever the process was started."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    root = Path(os.environ.get("LETHE_MIGRATIONS_ROOT", REPO_ROOT))
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def check(database_url: str) -> None:
    """Raises when the schema in service.db and the migrations disagree."""
    command.check(alembic_config(database_url))
