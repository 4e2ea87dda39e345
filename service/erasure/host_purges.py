"""Gone from every host: the local copies of erased fine-tuned weights, deleted and confirmed.

Merged weights and loaded generators are copies, on each host (an API server or a worker with
its own data folder), of checkpoints kept in the shared artifact store. Every host registers
and heartbeats here. When an erasure destroys checkpoints, a purge is recorded for every live
host — what to drop, as content addresses only. Each host deletes its copies and confirms:
at once when it next serves the model, and in its periodic loop (which retries a purge that
failed). A host silent for ``host_absent_after_seconds`` is marked absent, and its purge says
so. Once no purge of a request is pending, its certificate is issued again with the hosts that
confirmed (and those absent), in the JSON body and in plain words. These functions flush; the
caller commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.hosts import host_id
from service.core.storage import drop_merged
from service.db.base import utcnow
from service.db.enums import CertificateKind
from service.db.enums import HostPurgeStatus as P
from service.db.tables import Host, HostPurge, MlModel, RequestAction
from service.erasure.certificates import (
    ExactRetrainCertificate,
    current_certificate,
    issue_certificate,
)

log = logging.getLogger(__name__)

# A process's in-memory copy of a checkpoint's weights, forgotten with the files.
Forget = Callable[[str], None]


def heartbeat(session: Session, settings: Settings, role: str) -> str:
    """Register this host or say it is alive; its id."""
    me = host_id(settings)
    now = utcnow()
    session.execute(
        insert(Host)
        .values(id=me, role=role, registered_at=now, last_seen_at=now)
        .on_conflict_do_update(index_elements=["id"], set_={"last_seen_at": now})
    )
    return me


def live_hosts(session: Session, settings: Settings, now: datetime) -> list[str]:
    since = now - timedelta(seconds=settings.host_absent_after_seconds)
    return list(
        session.scalars(select(Host.id).where(Host.last_seen_at >= since).order_by(Host.id))
    )


def record_purges(
    session: Session,
    settings: Settings,
    model_id: uuid.UUID,
    request_ids: Sequence[str],
    checkpoints: Sequence[str],
    dropped_here: list[dict[str, Any]],
    role: str,
) -> list[HostPurge]:
    """A purge of ``checkpoints``' local copies for every live host; this host (which destroyed
    them, ``dropped_here``) confirms its own at once."""
    me = heartbeat(session, settings, role)
    now = utcnow()
    rows = []
    for host in live_hosts(session, settings, now):
        here = host == me
        row = HostPurge(
            id=uuid.uuid4(),
            host_id=host,
            model_id=model_id,
            request_ids=sorted(request_ids),
            checkpoints=sorted(checkpoints),
            status=P.confirmed if here else P.pending,
            attempts=1 if here else 0,
            last_attempt_at=now if here else None,
            settled_at=now if here else None,
            dropped=dropped_here if here else [],
        )
        session.add(row)
        rows.append(row)
    session.flush()
    for row in rows:
        if row.status == P.confirmed:
            _audit(session, row, "host.purge_confirmed", role)
    return rows


def acknowledge(
    session: Session,
    settings: Settings,
    actor: str,
    *,
    model_id: uuid.UUID | None = None,
    forget: Forget | None = None,
) -> int:
    """Delete this host's copies named by its unconfirmed purges (of ``model_id``, or all) and
    confirm them; a host marked absent that comes back confirms late. A purge whose deletion
    fails stays pending, to be tried again. How many were confirmed."""
    me = host_id(settings)
    stmt = select(HostPurge).where(
        HostPurge.host_id == me, HostPurge.status.in_([P.pending, P.absent])
    )
    if model_id is not None:
        stmt = stmt.where(HostPurge.model_id == model_id)
    rows = list(
        session.scalars(stmt.order_by(HostPurge.created_at).with_for_update(skip_locked=True))
    )
    confirmed = []
    for row in rows:
        row.attempts += 1
        row.last_attempt_at = utcnow()
        try:
            dropped = drop_merged(settings, list(row.checkpoints))
        except OSError as exc:
            log.warning("host %s: deleting local copies failed (%s)", me, type(exc).__name__)
            continue
        for checkpoint in row.checkpoints:
            if forget is not None:
                forget(checkpoint)
        row.dropped = [*row.dropped, *dropped]
        row.status = P.confirmed
        row.settled_at = utcnow()
        confirmed.append(row)
    return _settled(session, confirmed, "host.purge_confirmed", actor)


def mark_absent(session: Session, settings: Settings, actor: str, now: datetime) -> int:
    """Pending purges of hosts silent past the timeout: absent (recorded, and the certificate
    says so). How many."""
    since = now - timedelta(seconds=settings.host_absent_after_seconds)
    rows = list(
        session.scalars(
            select(HostPurge)
            .join(Host, Host.id == HostPurge.host_id)
            .where(HostPurge.status == P.pending, Host.last_seen_at < since)
            .with_for_update(of=HostPurge, skip_locked=True)
        )
    )
    for row in rows:
        row.status = P.absent
        row.settled_at = now
    return _settled(session, rows, "host.purge_absent", actor)


def _settled(session: Session, rows: list[HostPurge], action: str, actor: str) -> int:
    """Purges just confirmed or marked absent: audited, and the certificates they complete
    issued again. How many."""
    session.flush()
    for row in rows:
        _audit(session, row, action, actor)
    settle_certificates(session, rows, actor)
    return len(rows)


def _audit(session: Session, row: HostPurge, action: str, actor: str) -> None:
    request_ids: list[str | None] = list(row.request_ids) or [None]
    for request_id in request_ids:
        append_event(
            session,
            actor=actor,
            action=action,
            target_type="host",
            target_id=row.host_id,
            request_id=uuid.UUID(request_id) if request_id else None,
            details={
                "host": row.host_id,
                "model_id": str(row.model_id),
                "checkpoints": list(row.checkpoints),
                "status": row.status.value,
                "attempts": row.attempts,
                "dropped": list(row.dropped),
            },
        )


def hosts_section(session: Session, model_id: uuid.UUID, request_id: str) -> dict[str, Any]:
    """Where the local copies were deleted, for one (request, model)'s certificate: each host
    with its status, and the counts."""
    rows = [
        r
        for r in session.scalars(
            select(HostPurge)
            .where(HostPurge.model_id == model_id)
            .order_by(HostPurge.host_id, HostPurge.created_at)
        )
        if request_id in (r.request_ids or [])
    ]
    by_host: dict[str, HostPurge] = {}
    for row in rows:  # a host asked twice (switch-off, then restore) counts once: worst status
        held = by_host.get(row.host_id)
        if held is None or _rank(row.status) > _rank(held.status):
            by_host[row.host_id] = row
    servers = [
        {
            "host": host,
            "status": row.status.value,
            "settled_at": row.settled_at.isoformat() if row.settled_at else None,
            "dropped": list(row.dropped),
        }
        for host, row in sorted(by_host.items())
    ]
    counts = {s.value: sum(1 for v in servers if v["status"] == s.value) for s in P}
    section: dict[str, Any] = {"servers": servers, "total": len(servers), **counts}
    section["words"] = hosts_words(section)
    return section


def _rank(status: P) -> int:
    return {P.confirmed: 0, P.absent: 1, P.pending: 2}[status]


def hosts_words(section: dict[str, Any]) -> str:
    total, confirmed = section["total"], section["confirmed"]
    if not total:
        return ""
    words = (
        f"The local copies of the model's old version were deleted on {confirmed} of {total} "
        + ("server that serves" if total == 1 else "servers that serve")
        + " this model, each confirming it."
    )
    if section["absent"]:
        words += (
            f" {section['absent']} server(s) did not answer in time and are recorded as absent: "
            "they cannot load the old version again (it is gone from the shared store) and "
            "delete their copies when they come back."
        )
    if section["pending"]:
        words += (
            f" {section['pending']} server(s) have not confirmed yet; a further certificate "
            "follows when they have."
        )
    return words


def with_hosts(
    session: Session, body: ExactRetrainCertificate, model_id: uuid.UUID
) -> ExactRetrainCertificate:
    """The certificate with its hosts section as the purges stand now (words replaced)."""
    out = cast(ExactRetrainCertificate, dict(body))
    old = (body.get("hosts") or {}).get("words", "")
    words = str(body.get("plain_words", ""))
    if old and words.endswith(old):
        words = words[: -len(old)].rstrip()
    section = hosts_section(session, model_id, str(body["request_id"]))
    if not section["total"]:
        return out
    out["hosts"] = section
    out["plain_words"] = f"{words} {section['words']}".strip()
    return out


def settle_certificates(session: Session, rows: Iterable[HostPurge], actor: str) -> int:
    """Issue again the current exact certificate of each request whose purges all settled, so
    that it names the hosts that confirmed. How many were issued."""
    issued = 0
    for model_id, request_id in sorted({(r.model_id, rid) for r in rows for rid in r.request_ids}):
        certificate = current_certificate(session, uuid.UUID(request_id), model_id)
        if certificate is None or certificate.kind != CertificateKind.exact_retrain:
            continue
        body = with_hosts(session, cast(ExactRetrainCertificate, certificate.body), model_id)
        hosts = body.get("hosts") or {}
        if not hosts or hosts["pending"] or hosts == certificate.body.get("hosts"):
            continue
        action = session.get_one(RequestAction, certificate.action_id)
        model = session.get_one(MlModel, model_id)
        issue_certificate(session, action, model, body, actor)
        issued += 1
    return issued
