"""``lethe user create|list|disable`` and the banner ``lethe serve`` prints, on their own
database (the CLI commits)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.cli.users import console_banner
from service.core.config import Settings, get_settings
from tests.support.db import fresh_database


@pytest.fixture
def cli_db(settings: Settings, pg_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with fresh_database(pg_server, prefix="lethe_cli") as url:
        monkeypatch.setenv("LETHE_DATABASE_URL", url)
        get_settings.cache_clear()
        yield url
    get_settings.cache_clear()


def test_user_commands(cli_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    banner = console_banner(cli_db, "http://127.0.0.1:8000")
    assert "console: http://127.0.0.1:8000/console/" in banner and "/console/setup/" in banner
    monkeypatch.setenv("LETHE_USER_PASSWORD", "a long enough password")
    created = runner.invoke(app, ["user", "create", "Ana@Example.test", "--role", "dpo"])
    assert created.exit_code == 0, created.output
    assert (
        runner.invoke(app, ["user", "create", "ana@example.test", "--role", "dpo"]).exit_code == 2
    )
    bad_role = runner.invoke(app, ["user", "create", "b@example.test", "--role", "boss"])
    assert bad_role.exit_code == 2 and "unknown_role" in bad_role.output
    assert runner.invoke(app, ["user", "disable", "ana@example.test"]).exit_code == 0
    listed = runner.invoke(app, ["user", "list"])
    assert listed.output.strip() == "ana@example.test\tdpo\tdisabled"
    # Once an account exists, serve prints no setup link.
    assert "/console/setup/" not in console_banner(cli_db, "http://127.0.0.1:8000")
