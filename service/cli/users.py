"""``lethe user invite|list|disable|enable|first-admin-link`` and the console banner
``lethe serve`` prints.

People choose their own password from a single-use invitation link; nobody types it for them.
The first admin's link is printed once (on the first start), works once, and dies as soon as an
active admin exists; ``lethe user first-admin-link`` makes a new one while none exists.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import get_settings
from service.core.errors import DomainError

user_app = typer.Typer(help="Console accounts (people; machines use API tokens).")
BaseUrl = Annotated[
    str, typer.Option(help="the console's address as people reach it", envvar="LETHE_BASE_URL")
]


def _factory() -> sessionmaker[Session]:
    from service.db.session import database_url, session_factory

    return session_factory(database_url(get_settings()))


def _fail(exc: DomainError) -> typer.Exit:
    typer.echo(f"error: {exc.code}: {exc.message}", err=True)
    return typer.Exit(2)


@user_app.command("invite")
def user_invite(
    email: str,
    role: Annotated[str, typer.Option(help="dpo | ml_engineer | auditor | admin")],
    name: Annotated[str, typer.Option(help="the name colleagues will see")] = "",
    base_url: BaseUrl = "http://127.0.0.1:8000",
) -> None:
    """Print a single-use link (valid 72 h) with which the person creates their account."""
    from service.db.session import transaction
    from service.web.accounts import invite_user

    try:
        with transaction(_factory()) as session:
            token, _ = invite_user(session, email, role, name or email.split("@")[0], "cli")
    except DomainError as exc:
        raise _fail(exc) from None
    typer.echo(f"invitation ({role}, one time, 72 h): {base_url}/console/invite/{token}")


@user_app.command("list")
def user_list() -> None:
    """Accounts, their roles, second factor and whether they are disabled."""
    from service.db.session import transaction
    from service.web.accounts import list_users

    with transaction(_factory()) as session:
        for user in list_users(session):
            state = "disabled" if user.disabled_at else "active"
            factor = "2fa" if user.totp_enabled_at else "no-2fa"
            typer.echo(f"{user.email}\t{user.role}\t{state}\t{factor}")


@user_app.command("disable")
def user_disable(email: str) -> None:
    """Disable an account and end its sessions (never the last active admin)."""
    from service.db.session import transaction
    from service.web.accounts import disable_user

    try:
        with transaction(_factory()) as session:
            disable_user(session, email, actor="cli")
    except DomainError as exc:
        raise _fail(exc) from None
    typer.echo("disabled")


@user_app.command("enable")
def user_enable(email: str) -> None:
    """Enable a disabled account again (its owner signs in with the same password)."""
    from service.db.session import transaction
    from service.web.accounts import enable_user

    try:
        with transaction(_factory()) as session:
            enable_user(session, email, actor="cli")
    except DomainError as exc:
        raise _fail(exc) from None
    typer.echo("enabled")


@user_app.command("first-admin-link")
def first_admin_link(base_url: BaseUrl = "http://127.0.0.1:8000") -> None:
    """A new one-time link for the first admin (voids an earlier one); refused once an active
    admin exists: admins invite everyone else."""
    from service.db.session import transaction
    from service.web.accounts import first_admin_invite

    with transaction(_factory()) as session:
        token = first_admin_invite(session, replace=True)
    if token is None:
        typer.echo("error: an active admin exists: ask them for an invitation", err=True)
        raise typer.Exit(2)
    typer.echo(f"first admin: open {base_url}/console/invite/{token} (one time, 24 h)")


def console_banner(database_url: str, base_url: str, environment: str = "production") -> str:
    """What ``lethe serve`` prints: the console's address; on the very first start a one-time
    link for the first admin (printed this once); and a warning in development mode."""
    from service.db.session import session_factory, transaction
    from service.web.accounts import active_admins, first_admin_invite

    with transaction(session_factory(database_url)) as session:
        token = first_admin_invite(session)
        admins = active_admins(session)
    lines = [f"console: {base_url}/console/"]
    if token:
        lines.append(f"first admin: open {base_url}/console/invite/{token} (one time, 24 h)")
    elif not admins:
        lines.append(
            "first admin: the one-time link was printed at the first start; "
            "`lethe user first-admin-link` makes a new one"
        )
    if environment == "development":
        lines.append(
            "WARNING: development mode: built-in public keys and cookies without Secure; "
            "set LETHE_ENVIRONMENT=production and real keys before real data"
        )
    return "\n".join(lines)
