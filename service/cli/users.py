"""``lethe user create|list|disable`` and the console banner ``lethe serve`` prints."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import get_settings
from service.core.errors import DomainError

user_app = typer.Typer(help="Console accounts (people; machines use API tokens).")


def _factory() -> sessionmaker[Session]:
    from service.db.session import database_url, session_factory

    return session_factory(database_url(get_settings()))


@user_app.command("create")
def user_create(
    email: str,
    role: Annotated[str, typer.Option(help="dpo | ml_engineer | auditor | admin")],
) -> None:
    """Create an account. The password is read from LETHE_USER_PASSWORD or asked for."""
    from service.db.session import transaction
    from service.web.accounts import create_user

    password = os.environ.get("LETHE_USER_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    try:
        with transaction(_factory()) as session:
            create_user(session, email, role, password, actor="cli")
    except DomainError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {role} account")


@user_app.command("list")
def user_list() -> None:
    """Accounts, their roles and whether they are disabled."""
    from service.db.session import transaction
    from service.web.accounts import list_users

    with transaction(_factory()) as session:
        for user in list_users(session):
            state = "disabled" if user.disabled_at else "active"
            typer.echo(f"{user.email}\t{user.role}\t{state}")


@user_app.command("disable")
def user_disable(email: str) -> None:
    """Disable an account; its sessions end at their next request."""
    from service.db.session import transaction
    from service.web.accounts import disable_user

    try:
        with transaction(_factory()) as session:
            disable_user(session, email, actor="cli")
    except DomainError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo("disabled")


def console_banner(database_url: str, base_url: str) -> str:
    """What ``lethe serve`` prints: the console's address and, while no account exists, a
    one-time link that lets the first admin create an account (valid 24 hours)."""
    from service.db.session import session_factory, transaction
    from service.web.accounts import first_admin_invite

    with transaction(session_factory(database_url)) as session:
        token = first_admin_invite(session)
    lines = [f"console: {base_url}/console/"]
    if token:
        lines.append(f"first admin: open {base_url}/console/setup/{token} (one time, 24 h)")
    return "\n".join(lines)
