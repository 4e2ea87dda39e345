"""``lethe user invite|list|disable|enable|first-admin-link`` and the banner ``lethe serve``
prints, on their own database (the CLI commits)."""

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


def test_user_commands(cli_db: str) -> None:
    runner = CliRunner()
    banner = console_banner(cli_db, "http://127.0.0.1:8000", "development")
    assert "console: http://127.0.0.1:8000/console/" in banner and "/console/invite/" in banner
    assert "WARNING: development mode" in banner
    # The first-admin link is printed once: a second start says where it went instead.
    again = console_banner(cli_db, "http://127.0.0.1:8000")
    assert "/console/invite/" not in again and "first-admin-link" in again
    link = runner.invoke(app, ["user", "first-admin-link"])
    assert link.exit_code == 0 and "/console/invite/" in link.output
    invited = runner.invoke(app, ["user", "invite", "Ana@Example.test", "--role", "dpo"])
    assert invited.exit_code == 0 and "/console/invite/" in invited.output, invited.output
    bad_role = runner.invoke(app, ["user", "invite", "b@example.test", "--role", "boss"])
    assert bad_role.exit_code == 2 and "unknown_role" in bad_role.output
    assert runner.invoke(app, ["user", "disable", "nobody@example.test"]).exit_code == 2


def test_enable_and_the_last_admin(cli_db: str) -> None:
    from service.db.session import session_factory, transaction
    from service.web.accounts import create_user

    with transaction(session_factory(cli_db)) as s:
        create_user(s, "root@example.test", "admin", "a long enough password", "test")
        create_user(s, "ana@example.test", "dpo", "a long enough password", "test")
    runner = CliRunner()
    last = runner.invoke(app, ["user", "disable", "root@example.test"])
    assert last.exit_code == 2 and "last_admin" in last.output
    assert runner.invoke(app, ["user", "disable", "ana@example.test"]).exit_code == 0
    assert "ana@example.test\tdpo\tdisabled" in runner.invoke(app, ["user", "list"]).output
    assert runner.invoke(app, ["user", "enable", "ana@example.test"]).exit_code == 0
    assert "ana@example.test\tdpo\tactive" in runner.invoke(app, ["user", "list"]).output
    # Once an admin exists, serve prints no link and none can be made.
    assert "/console/invite/" not in console_banner(cli_db, "http://127.0.0.1:8000")
    assert runner.invoke(app, ["user", "first-admin-link"]).exit_code == 2


def test_token_list_shows_expiry_never_the_secret(cli_db: str) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["token", "create", "nightly-export", "--role", "auditor"])
    assert made.exit_code == 0, made.output
    secret = made.output.strip().splitlines()[-1]
    listed = runner.invoke(app, ["token", "list"])
    [row] = [r for r in listed.output.splitlines() if r.startswith("nightly-export\t")]
    _name, role, state, _created, expires = row.split("\t")
    assert (role, state) == ("auditor", "active") and expires != "never"
    assert secret not in listed.output
