"""The console's view of the servers that can hold copies of fine-tuned weights (the `hosts`
that register and heartbeat, service.erasure.host_purges): whether each is still heard from,
and what deletions of erased people's weights it confirmed or still owes, in plain words."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.db.base import utcnow
from service.db.enums import HostPurgeStatus as P
from service.db.tables import Host, HostPurge

ROLES = {"api": "API server", "worker": "Worker"}


@dataclass(frozen=True)
class ServerRow:
    host_id: str
    role: str
    name: str
    heard: str
    gone: bool
    deletions: str
    last_seen_at: datetime


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(int(seconds), 0)} seconds ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} minutes ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} hours ago"
    return f"{round(seconds / 86400)} days ago"


def _deletions_of(n: int) -> str:
    return f"{n} deletion{'s' if n != 1 else ''}"


def _deletions(counts: Counter[str]) -> str:
    done, waiting, missed = counts[P.confirmed], counts[P.pending], counts[P.absent]
    if not done + waiting + missed:
        return "No deletion has been asked of it."
    parts = []
    if done:
        parts.append(f"confirmed {_deletions_of(done)} of erased weights")
    if waiting:
        parts.append(f"{_deletions_of(waiting)} not confirmed yet")
    if missed:
        parts.append(
            f"{_deletions_of(missed)} it never confirmed before it fell silent (named in the "
            "certificates concerned)"
        )
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def server_rows(
    session: Session, settings: Settings, now: datetime | None = None
) -> list[ServerRow]:
    """Every registered server, most recently heard from first."""
    now = now or utcnow()
    silent_after = timedelta(seconds=settings.host_absent_after_seconds)
    counts: dict[str, Counter[str]] = {}
    for host_id, status, n in session.execute(
        select(HostPurge.host_id, HostPurge.status, func.count()).group_by(
            HostPurge.host_id, HostPurge.status
        )
    ):
        counts.setdefault(host_id, Counter())[str(status)] = n
    rows = []
    for host in session.scalars(select(Host).order_by(Host.last_seen_at.desc(), Host.id)):
        gone = now - host.last_seen_at > silent_after
        heard = f"Last heard from {_ago((now - host.last_seen_at).total_seconds())}"
        heard += (
            ": silent too long, so it is treated as gone and its deletions as not confirmed."
            if gone
            else "."
        )
        rows.append(
            ServerRow(
                host_id=host.id,
                role=host.role,
                name=f"{ROLES.get(host.role, host.role.capitalize())} {host.id[:8]}",
                heard=heard,
                gone=gone,
                deletions=_deletions(counts.get(host.id, Counter())),
                last_seen_at=host.last_seen_at,
            )
        )
    return rows
