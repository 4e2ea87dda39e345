"""Physical deletion: after a purge commits, VACUUM the tables it touched so that the erased
rows' old tuple versions leave the heap pages, and record it in the audit log.

An UPDATE that nulls a row's content leaves the old version in the page as a dead tuple,
readable from the data files until a VACUUM removes it. VACUUM cannot run inside a
transaction block, so it runs on its own autocommit connection after the purging transaction
committed; the task wrapper calls ``reclaim_space`` then (the purge only marks its session).
What lethe cannot remove — copies in WAL and backups — is stated, with the deployment's
retention, by ``physical_deletion_claim``.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from service.audit import append_event
from service.core.config import Settings
from service.db.base import utcnow
from service.db.session import database_url

log = logging.getLogger(__name__)

_PURGED = "lethe.purged_tables"
# The table an erasure purges, and the request tables whose dead row versions hold the plain
# text that sealing requests filed before per-request keys replaced (service.cli.keys). Only
# these may be vacuumed: the name is interpolated into SQL.
PURGEABLE = frozenset({"training_records"})
SEALED_REQUEST_TABLES = ("erasure_requests", "request_notes", "rule_set_versions")
VACUUMABLE = PURGEABLE | set(SEALED_REQUEST_TABLES)
_TUPLES = re.compile(
    r'finished vacuuming "(?P<rel>[^"]+)".*?tuples: (?P<removed>\d+) removed, '
    r"(?P<remain>\d+) remain, (?P<held>\d+) are dead but not yet removable",
    re.S,
)
# VACUUM FULL reports each rewritten relation differently: removable and kept row versions.
_REWRITTEN = re.compile(
    r'"(?P<rel>[^"]+)": found (?P<removed>\d+) removable, (?P<remain>\d+) nonremovable row '
    r"versions"
)


def mark_purged(session: Session, table: str, request_id: uuid.UUID) -> None:
    """Called by a purge: this session's commit leaves dead row versions in ``table``."""
    assert table in PURGEABLE, table
    session.info.setdefault(_PURGED, {}).setdefault(table, set()).add(str(request_id))


def take_purged(session: Session) -> dict[str, list[str]]:
    """The tables (→ request ids) a committed unit of work purged; empty if none."""
    purged: dict[str, set[str]] = session.info.pop(_PURGED, {})
    return {table: sorted(ids) for table, ids in sorted(purged.items())}


def vacuum(settings: Settings, tables: list[str]) -> dict[str, Any]:
    """VACUUM (or VACUUM FULL, per settings) each table on an autocommit connection of its
    own; returns figures only: pg_stat dead-tuple estimates before/after and VACUUM's own
    count of removed and not-yet-removable tuples per relation (heap and TOAST)."""
    full = settings.physical_deletion == "vacuum_full"
    engine = create_engine(database_url(settings), poolclass=NullPool)
    notices: list[str] = []
    started = utcnow()
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
            # Autovacuum holding the table yields to us; anything else makes us give up, not hang.
            conn.exec_driver_sql("SET lock_timeout = '60s'")
            before = _dead_tuples(conn, tables)
            for table in tables:
                assert table in VACUUMABLE, table
                conn.exec_driver_sql(f"VACUUM ({'FULL, ' if full else ''}VERBOSE) {table}")
            after = _dead_tuples(conn, tables)
    finally:
        engine.dispose()
    relations = [
        {
            "relation": m["rel"],
            "removed": int(m["removed"]),
            "remaining": int(m["remain"]),
            "dead_not_yet_removable": int(m["held"]),
        }
        for m in _TUPLES.finditer("\n".join(notices))
    ] + [
        # Rewritten: nothing dead stays in the new pages (nonremovable: live or still needed).
        {
            "relation": m["rel"],
            "removed": int(m["removed"]),
            "remaining": int(m["remain"]),
            "dead_not_yet_removable": None,
        }
        for m in _REWRITTEN.finditer("\n".join(notices))
    ]
    return {
        "tables": tables,
        "method": "VACUUM FULL" if full else "VACUUM",
        "started_at": started.isoformat(),
        "finished_at": utcnow().isoformat(),
        "dead_tuples_before": before,
        "dead_tuples_after": after,
        "relations": relations,
    }


def _dead_tuples(conn: Any, tables: list[str]) -> dict[str, int | None]:
    # pg_stat figures are estimates, flushed by backends with a delay: stated as such.
    rows = conn.execute(
        text(
            "SELECT relname, n_dead_tup FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname = ANY(:t)"
        ),
        {"t": tables},
    ).all()
    found = {str(name): int(n) for name, n in rows}
    return {t: found.get(t) for t in tables}


class _Task(Protocol):
    @property
    def settings(self) -> Settings: ...

    def transaction(self) -> AbstractContextManager[Session]: ...


def reclaim_space(task: _Task, purged: dict[str, list[str]], actor: str) -> None:
    """After the purging transaction committed: VACUUM, then one audit event per request
    (its report shows it). A failed VACUUM is recorded, not raised: the erasure stands and
    autovacuum will get there; the event says that the space was not reclaimed."""
    if not purged:
        return
    tables = sorted(purged)
    try:
        details = vacuum(task.settings, tables)
        action = "storage.vacuumed"
    except DBAPIError as exc:
        log.warning("VACUUM of %s failed (%s)", tables, type(exc.orig).__name__)
        details = {"tables": tables, "error": type(exc.orig).__name__}
        action = "storage.vacuum_failed"
    with task.transaction() as session:
        for request_id in sorted({r for ids in purged.values() for r in ids}):
            append_event(
                session,
                actor=actor,
                action=action,
                target_type="table",
                target_id=",".join(tables),
                request_id=uuid.UUID(request_id),
                details=details,
            )


def physical_deletion_claim(
    settings: Settings, keys_destroyed: list[str] | None = None, destroyed_at: str | None = None
) -> dict[str, Any]:
    """What a certificate states about physical removal: what lethe does, what stays, and
    which of the person's keys were destroyed (``keys_destroyed``: those the purge did, at
    ``destroyed_at``; now when not given)."""
    days = settings.backup_retention_days
    method = "VACUUM FULL" if settings.physical_deletion == "vacuum_full" else "VACUUM"
    retention = (
        f"until this deployment's backup retention of {days} day(s) ends"
        if days is not None
        else "until the deployment's backup retention ends (not configured here: unknown)"
    )
    if method == "VACUUM":
        pages = (
            "removes the old row versions from the table's pages; their bytes can stay in the "
            "pages' free space until new rows overwrite them"
        )
    else:
        pages = "rewrites the table, so the old pages holding them are dropped from the database"
    words = (
        f"Physical deletion: after the records' content was deleted, lethe ran {method} on the "
        f"training-records table, which {pages} (recorded in the audit log as storage.vacuumed). "
        f"Copies remain in the database's write-ahead log and in backups {retention}; lethe "
        "does not control backups."
    )
    when = destroyed_at or (utcnow().isoformat() if keys_destroyed else None)
    if keys_destroyed:
        words += (
            " The records were stored encrypted under the person's own key for this model; "
            f"that key was destroyed in the same step ({_key_words(keys_destroyed)}, at "
            f"{_minute(when)} UTC), so every copy left in the pages' free space, the write-ahead "
            "log and backups can no longer be read."
        )
    return {
        "method": method,
        "tables": sorted(PURGEABLE),
        "backup_retention_days": days,
        "remains_in": ["write-ahead log (WAL)", "database backups"],
        "keys_destroyed": list(keys_destroyed or []),
        "keys_destroyed_at": when,
        "remains_readable": not keys_destroyed,
        "statement": words,
    }


def carried_claim(settings: Settings, earlier: dict[str, Any]) -> dict[str, Any]:
    """The claim of a certificate that supersedes ``earlier`` (a fine-tune's restore after its
    switch-off): the keys destroyed then, at their time, are still the keys of this erasure."""
    physical = earlier.get("physical_deletion") or {}
    return physical_deletion_claim(
        settings, list(physical.get("keys_destroyed") or []), physical.get("keys_destroyed_at")
    )


def _key_words(keys: list[str]) -> str:
    # Key ids are "<bundle>#<keyed hash of the subject>": the hash's head names the key for
    # whoever compares with the certificate's JSON, and is no personal data.
    heads = [k.rsplit("#", 1)[-1] for k in keys[:3]]
    shown = ", ".join(f"key id {h[:16]}…" if len(h) > 16 else f"key id {h}" for h in heads)
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _minute(when: str | None) -> str:
    return (when or "")[:16].replace("T", " ")
