"""The ``lethe`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.keys import keys_app, unsealed_warning
from service.cli.users import user_app
from service.core.config import get_settings
from service.ops import audit as ops_audit
from service.ops import models as ops_models
from service.ops import requests as ops_requests
from service.stack.stopping import signals_stop, stop_behind

app = typer.Typer(no_args_is_help=True, help="lethe: right-to-be-forgotten for ML models.")
token_app = typer.Typer(help="API tokens.")
audit_app = typer.Typer(help="The audit log.")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(ops_requests.app, name="requests")
app.add_typer(ops_models.app, name="models")
audit_app.command("export")(ops_audit.export)
app.add_typer(user_app, name="user")
app.add_typer(keys_app, name="keys")


@app.command()
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head). With LETHE_MIGRATION_DATABASE_URL
    (the owner), also make the login of LETHE_DATABASE_URL a member of lethe_runtime."""
    from service.db.privileges import ensure_runtime_login
    from service.stack.migrate import upgrade
    from service.stack.processes import database

    settings = get_settings()
    if settings.migration_database_url and settings.database_url:
        upgrade(settings.migration_database_url)
        login = ensure_runtime_login(settings.migration_database_url, settings.database_url)
        typer.echo(f"migrations applied; the service connects as {login} (lethe_runtime)")
        warning = unsealed_warning(settings.migration_database_url)
    else:
        with database(settings) as url:
            upgrade(url)
            warning = unsealed_warning(url)
        typer.echo("migrations applied")
    if warning:  # requests from before per-request keys: their data would never be destroyed
        typer.echo(warning)


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    with_worker: Annotated[
        bool,
        typer.Option(help="also run a worker beside the API (always, when the DB is embedded)"),
    ] = False,
) -> None:
    """Run the API until interrupted; ML work runs in `lethe worker` processes, or beside the
    API when the database is embedded (the one-command default) or --with-worker is given."""
    import uvicorn

    from service.core.observability import configure_logging
    from service.stack.migrate import upgrade
    from service.stack.processes import database, worker_process

    settings = get_settings()
    embedded = settings.database_url is None
    # uvicorn shuts down on SIGTERM/SIGINT and then re-raises the signal: it becomes an
    # exception, so that the worker and the embedded PostgreSQL below are stopped too.
    try:
        with signals_stop(), database(settings) as url:
            upgrade(url)
            settings = get_settings()
            if embedded:
                typer.echo(f"embedded PostgreSQL: {url}")
            from service.cli.users import console_banner

            typer.echo(console_banner(url, f"http://{host}:{port}", settings.environment))
            # Our log format for uvicorn's loggers too (log_config=None: they reach the root).
            configure_logging(settings.log_level, settings.log_format)
            run = partial(
                uvicorn.run,
                "service.app.factory:create_app",
                factory=True,
                host=host,
                port=port,
                log_config=None,
            )
            if with_worker or embedded:
                with worker_process(settings):
                    run()
            else:
                run()
    except Exception as error:
        if stop_behind(error) is None:
            raise


@app.command()
def worker(
    queues: str = "requests,ml",
    concurrency: int = 2,
    beat: Annotated[
        bool,
        typer.Option(
            help="run the reaper's schedule in this worker (safe to run in several: the reaper "
            "skips what another holds)"
        ),
    ] = True,
) -> None:
    """Run a Celery worker against the configured database and broker (with the reaper)."""
    import tempfile

    from service.stack.processes import worker_command

    settings = get_settings()
    if settings.database_url is None:
        raise typer.BadParameter("set LETHE_DATABASE_URL (use `lethe serve` for the embedded DB)")
    with tempfile.TemporaryDirectory(prefix="lethe-beat-") as tmp:
        # One schedule file per worker: beat's file is not safe to share between processes.
        schedule = Path(tmp) / "celerybeat-schedule" if beat else None
        raise typer.Exit(subprocess.call(worker_command(queues, concurrency, schedule)))


@app.command("beat")
def beat_cmd() -> None:
    """Run Celery beat (the stuck-job reaper's schedule)."""
    from service.stack.processes import beat_command

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    raise typer.Exit(subprocess.call(beat_command(settings.data_dir / "celerybeat-schedule")))


@app.command()
def demo(
    reports_dir: Annotated[Path, typer.Option(help="where the audit report is written")] = Path(
        "reports"
    ),
) -> None:
    """Run the main job end to end on the embedded default (see README)."""
    from service.demo.run import run_demo

    try:
        with signals_stop():
            code = run_demo(reports_dir)
    except Exception as error:
        stop = stop_behind(error)
        if stop is None:
            raise
        # The worker and the embedded PostgreSQL were stopped on the way out.
        typer.echo(f"demo stopped ({stop}); its worker and database were stopped too", err=True)
        code = 128 + stop.signum
    raise typer.Exit(code)


@app.command("verify-exact")
def verify_exact(
    csv: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="input CSV")],
    subject_column: Annotated[str, typer.Option(help="column naming each row's data subject")],
    label_column: Annotated[str, typer.Option(help="the class label column")],
    forget_file: Annotated[
        str,
        typer.Option(
            help="a file naming the subjects to erase, one per line ('-': standard input); "
            "never on the command line (shell history, process list)"
        ),
    ],
    shards: Annotated[
        int | None,
        typer.Option(help="default: one shard per 500 training rows, at most 16"),
    ] = None,
    slices: Annotated[int | None, typer.Option(help="default: 8")] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="fixed epochs instead of the default early stopping (converges)"),
    ] = None,
    seed: int = 0,
) -> None:
    """Train SISA on any CSV, erase subjects, check the retrained shards bit for bit.

    By default every slice trains with early stopping on a keyed-hash validation part of its
    shard's own records (the library's converging defaults)."""
    from service.cli.verify_exact import run_verify_exact

    try:
        result = run_verify_exact(
            csv,
            subject_column,
            label_column,
            shards,
            slices,
            _subjects(forget_file),
            epochs=epochs,
            seed=seed,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result))


def _subjects(source: str) -> list[str]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    subjects = [line.strip() for line in text.splitlines() if line.strip()]
    if not subjects:
        raise typer.BadParameter("no subject to erase", param_hint="--forget-file")
    return subjects


def _anchored_factory() -> Any:
    from service.audit.anchor import Anchor, anchored
    from service.db.session import database_url, session_factory

    settings = get_settings()
    return anchored(session_factory(database_url(settings)), Anchor.from_settings(settings))


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[str, typer.Option(help="dpo | ml_engineer | auditor | admin")],
    expires_days: Annotated[
        int | None,
        typer.Option(min=1, max=3650, help="the token stops working after N days (default 90)"),
    ] = None,
) -> None:
    """Create an API token; it is printed once and only its hash is stored."""
    from service.api.tokens import create_token
    from service.core.errors import DomainError
    from service.db.enums import Role
    from service.db.session import transaction

    if role not in {r.value for r in Role}:
        raise typer.BadParameter("unknown role")
    try:
        with transaction(_anchored_factory()) as session:
            token = create_token(session, name, role, actor="cli", expires_in_days=expires_days)
    except DomainError as exc:
        raise typer.BadParameter(exc.message) from None
    typer.echo(token)


@token_app.command("list")
def token_list() -> None:
    """Every API token: name, role, state, created, expires (never the token itself)."""
    from service.api.tokens import list_tokens, token_state
    from service.db.session import database_url, session_factory

    with session_factory(database_url(get_settings()))() as session:
        for row in list_tokens(session):
            expires = row.expires_at.date().isoformat() if row.expires_at else "never"
            created = row.created_at.date().isoformat()
            typer.echo(f"{row.name}\t{row.role}\t{token_state(row)}\t{created}\t{expires}")


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke every live token with this name (rotate: create the new one first)."""
    from service.api.tokens import revoke_tokens
    from service.core.errors import DomainError
    from service.db.session import transaction

    try:
        with transaction(_anchored_factory()) as session:
            revoked = revoke_tokens(session, name, actor="cli")
    except DomainError as exc:
        raise typer.BadParameter(exc.message) from None
    typer.echo(f"revoked {revoked}")


@audit_app.command("verify")
def audit_verify(
    checkpoint: Annotated[
        str | None,
        typer.Option(help="a signed checkpoint (or an exported report) you kept: file or URL"),
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(help="the signing public key you kept (PEM); default: this service's"),
    ] = None,
    incremental: Annotated[
        bool, typer.Option(help="recompute only events after the last verified head")
    ] = False,
) -> None:
    """Verify the audit log: every event's chain link and MAC, and agreement with every stored
    checkpoint; with --checkpoint, also with the checkpoint you kept. Names the first bad
    event and the kind of tampering; exit 1 if anything fails."""
    from service.audit.anchor import Anchor, load_public_key, read_checkpoint
    from service.audit.verify import verify_log
    from service.db.session import database_url, session_factory

    settings = get_settings()
    anchor = Anchor.from_settings(settings)
    kept = None
    if checkpoint is not None:
        key = (
            load_public_key(public_key.read_bytes())
            if public_key is not None
            else anchor.public_key
        )
        kept = (read_checkpoint(checkpoint), key)
    with session_factory(database_url(settings))() as session:
        result = verify_log(session, anchor, incremental=incremental, kept=kept)
    typer.echo(json.dumps(result.as_dict()))
    raise typer.Exit(0 if result.ok else 1)


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the Ed25519 public key that signs audit checkpoints (PEM), for offline checks."""
    from service.audit.anchor import Anchor

    typer.echo(Anchor.from_settings(get_settings()).public_key_pem(), nl=False)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign and store a checkpoint of the chain's current head, and print it."""
    from service.audit.anchor import Anchor
    from service.db.session import database_url, session_factory

    settings = get_settings()
    with session_factory(database_url(settings))() as session:
        checkpoint = Anchor.from_settings(settings).checkpoint_head(session)
    typer.echo(json.dumps(checkpoint.as_dict() if checkpoint else None))


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
