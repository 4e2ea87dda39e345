"""``lethe keys seal-existing [--check]``: give every request filed before per-request keys a
key of its own and re-seal its data under it (service.erasure.seal_existing), one committed
batch at a time, so that a run killed half-way loses nothing and the next run goes on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.core.config import get_settings

if TYPE_CHECKING:
    from service.erasure.seal_existing import Sealed

keys_app = typer.Typer(help="The requests' own encryption keys.")


@dataclass
class _Totals:
    requests: int = 0
    columns: dict[str, int] = field(default_factory=dict)
    notes: int = 0
    rule_set_versions: int = 0

    def add(self, sealed: Sealed) -> None:
        self.requests += 1
        for name in [*sealed.sealed, *sealed.moved]:
            self.columns[name] = self.columns.get(name, 0) + 1
        self.notes += sealed.notes
        self.rule_set_versions += sealed.rule_set_versions


def _factory() -> Any:
    from service.audit.anchor import Anchor, anchored
    from service.db.session import database_url, session_factory

    settings = get_settings()
    return anchored(session_factory(database_url(settings)), Anchor.from_settings(settings))


def _counts(factory: Any) -> tuple[int, int]:
    from service.erasure.seal_existing import count_legacy_digest_events, count_unsealed

    with factory() as session:
        return count_unsealed(session), count_legacy_digest_events(session)


def unsealed_warning(database_url: str) -> str | None:
    """After migrating: a word when requests without a key of their own remain."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from service.erasure.seal_existing import count_unsealed

    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            remaining = count_unsealed(session)
    finally:
        engine.dispose()
    return _remaining_words(remaining) if remaining else None


def _remaining_words(remaining: int) -> str:
    if remaining == 0:
        return "Every request has its own encryption key."
    return (
        f"{remaining} request(s) filed before per-request keys are not yet sealed under their "
        "own key: their data cannot be destroyed when their retention ends. Run "
        "`lethe keys seal-existing`."
    )


def _legacy_words(events: int) -> str:
    return (
        f"{events} audit event(s) written before keyed hashes carry a plain SHA-256 of a DPO's "
        "text (a reason or an identity check's reference), not the text itself. The audit log "
        "cannot be rewritten, so these stay (docs/FORGETTING.md)."
    )


@keys_app.command("seal-existing")
def seal_existing(
    check: Annotated[
        bool,
        typer.Option(help="only count the requests without a key of their own; exit 1 if any"),
    ] = False,
    batch: Annotated[int, typer.Option(min=1, max=1000, help="requests per commit")] = 50,
) -> None:
    """Seal every request filed before per-request keys under a key of its own (its reason,
    forget content, notes, identity references and rules), so that its retention can destroy
    it. Safe to run twice and to stop at any time."""
    factory = _factory()
    remaining, legacy_events = _counts(factory)
    if check:
        typer.echo(_remaining_words(remaining))
        if legacy_events:
            typer.echo(_legacy_words(legacy_events))
        raise typer.Exit(1 if remaining else 0)
    totals = _run(factory, remaining, batch)
    typer.echo(_summary(totals))
    if totals.requests:
        typer.echo(_reclaimed())
    remaining, legacy_events = _counts(factory)
    typer.echo(_remaining_words(remaining))
    if legacy_events:
        typer.echo(_legacy_words(legacy_events))
    raise typer.Exit(1 if remaining else 0)


def _run(factory: Any, total: int, batch: int) -> _Totals:
    from service.db.session import transaction
    from service.erasure.seal_existing import next_unsealed, seal_request
    from service.rules.rulesets import reseal_rules_of_request

    settings = get_settings()
    totals = _Totals()
    label = "Sealing requests under their own keys"
    with typer.progressbar(length=total, label=label) as bar:
        while True:
            with transaction(factory) as session:
                requests = next_unsealed(session, batch)
                for request in requests:
                    try:
                        sealed = seal_request(
                            session, settings, request, "cli", reseal_rules_of_request
                        )
                    except ValueError:
                        # Sealed under another service key than the configured one: nothing of
                        # this batch is committed; the request's id is no personal data.
                        typer.echo(
                            f"\nerror: the stored data of request {request.id} cannot be "
                            "opened with the configured service key (LETHE_ENCRYPTION_KEY); "
                            f"{totals.requests} request(s) were sealed before it.",
                            err=True,
                        )
                        raise typer.Exit(2) from None
                    totals.add(sealed)
            bar.update(len(requests))
            if not requests:
                return totals


def _reclaimed() -> str:
    """VACUUM (FULL, per LETHE_PHYSICAL_DELETION) the tables whose old row versions still hold
    the plain text sealing replaced; what it did, or why it could not."""
    from sqlalchemy.exc import DBAPIError

    from service.exact.physical import SEALED_REQUEST_TABLES, vacuum

    tables = list(SEALED_REQUEST_TABLES)

    advice = f"run VACUUM FULL on {', '.join(tables)} as the tables' owner."
    try:
        done = vacuum(get_settings(), tables)
    except DBAPIError as exc:
        return f"The old plain copies could not be cleared ({type(exc.orig).__name__}): {advice}"
    vacuumed = {r["relation"].rpartition(".")[2] for r in done["relations"]}
    if missing := [t for t in tables if t not in vacuumed]:
        # PostgreSQL skips, with a warning only, a table the user may not vacuum.
        return f"The old plain copies could not be cleared from {', '.join(missing)}: {advice}"
    removed = sum(r["removed"] for r in done["relations"])
    kept = (
        "the space is rewritten: no page keeps them"
        if done["method"] == "VACUUM FULL"
        else "their bytes may stay in free page space until overwritten (LETHE_PHYSICAL_DELETION"
        "=vacuum_full rewrites the tables)"
    )
    return (
        f"{done['method']} removed {removed} old row version(s) that held the plain text; {kept}."
        " Copies in the write-ahead log and in backups taken before remain until their "
        "retention ends."
    )


_WORDS = {
    "reason": "filing reasons",
    "forget_content": "identifiers, names and facts to forget",
    "payload_hash": "hashes of what was filed",
    "identity_reference": "identity check references kept in plain text",
    "decision_reason": "decision reasons kept in plain text",
}


def _summary(totals: _Totals) -> str:
    if totals.requests == 0:
        return "Nothing to seal."
    parts = [f"{n} {_WORDS.get(name, name)}" for name, n in totals.columns.items() if n]
    parts.append(f"{totals.notes} DPO notes")
    parts.append(f"{totals.rule_set_versions} guard rule versions")
    return (
        f"Sealed {totals.requests} request(s) under their own encryption keys ("
        + ", ".join(parts)
        + "). Their data is now destroyed like any other request's when its retention ends."
    )
