"""Gone from every host: a purge per live host, each host deleting its own copies and
confirming, silent hosts marked absent, and the certificate issued again with the hosts once
none is pending."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.storage import merged_root
from service.db.base import utcnow
from service.db.enums import ActionStatus, HostPurgeStatus, Strategy
from service.db.tables import AuditEvent, Host, HostPurge, RequestAction
from service.erasure.certificates import current_certificate, issue_certificate
from service.erasure.filing import NewRequest, file_request
from service.erasure.host_purges import (
    acknowledge,
    heartbeat,
    hosts_section,
    mark_absent,
    record_purges,
)
from tests.support.db import bare_generative_model

CHECKPOINTS = ["c" * 64, "d" * 64]


def _as(settings: Settings, host: str, tmp_path: Path) -> Settings:
    """The settings of host ``host``: its own id and its own folder of merged weights."""
    return settings.model_copy(update={"host_id": host, "artifact_url": str(tmp_path / host)})


def _host(session: Session, host: str, seen_ago: timedelta) -> None:
    at = utcnow() - seen_ago
    session.add(Host(id=host, role="api", registered_at=at, last_seen_at=at))
    session.flush()


def _copy(settings: Settings, checkpoint: str) -> tuple[Path, str]:
    folder = merged_root(settings) / f"ft-{checkpoint}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights of " + checkpoint.encode())
    return folder, hashlib.sha256(b"weights of " + checkpoint.encode()).hexdigest()


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def test_every_live_host_gets_a_purge_and_the_one_that_destroyed_confirms_at_once(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    me, other, gone = f"self-{_tag()}", f"other-{_tag()}", f"gone-{_tag()}"
    _host(session, other, timedelta(seconds=5))
    _host(session, gone, timedelta(hours=2))  # silent past the timeout: not asked
    model, rid = bare_generative_model(session, "ft"), str(uuid.uuid4())
    dropped = [{"type": "merged_weights", "checkpoint": CHECKPOINTS[0]}]
    rows = record_purges(
        session, _as(settings, me, tmp_path), model.id, [rid], CHECKPOINTS, dropped, "worker"
    )
    assert {r.host_id: r.status for r in rows} == {
        me: HostPurgeStatus.confirmed,
        other: HostPurgeStatus.pending,
    }
    assert [r.dropped for r in rows if r.host_id == me] == [dropped]
    section = hosts_section(session, model.id, rid)
    assert (section["total"], section["confirmed"], section["pending"]) == (2, 1, 1)
    assert "deleted on 1 of 2 servers" in section["words"]
    assert "1 server(s) have not confirmed yet" in section["words"]


def test_a_host_deletes_its_copies_forgets_them_and_confirms(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    me, other = f"self-{_tag()}", f"other-{_tag()}"
    theirs = _as(settings, other, tmp_path)
    heartbeat(session, theirs, "api")
    model, rid = bare_generative_model(session, "ft"), str(uuid.uuid4())
    folder, sha = _copy(theirs, CHECKPOINTS[1])
    kept, _ = _copy(theirs, "e" * 64)  # another version's copy: not named, kept
    record_purges(session, _as(settings, me, tmp_path), model.id, [rid], CHECKPOINTS, [], "w")
    forgotten: list[str] = []
    assert acknowledge(session, theirs, "api", model_id=model.id, forget=forgotten.append) == 1
    assert not folder.exists() and kept.exists() and sorted(forgotten) == CHECKPOINTS
    row = session.scalars(select(HostPurge).where(HostPurge.host_id == other)).one()
    assert row.status == HostPurgeStatus.confirmed and row.settled_at is not None
    assert [(d["checkpoint"], d["sha256"]) for d in row.dropped] == [(CHECKPOINTS[1], sha)]
    event = session.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "host.purge_confirmed", AuditEvent.target_id == other
        )
    ).one()
    assert str(event.request_id) == rid and event.details["checkpoints"] == CHECKPOINTS
    # Nothing left to do: a second run confirms nothing.
    assert acknowledge(session, theirs, "api", model_id=model.id) == 0
    assert "deleted on 2 of 2 servers" in hosts_section(session, model.id, rid)["words"]


def test_a_silent_host_is_marked_absent_and_the_words_say_so(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    me, other = f"self-{_tag()}", f"other-{_tag()}"
    _host(session, other, timedelta(seconds=1))
    model, rid = bare_generative_model(session, "ft"), str(uuid.uuid4())
    record_purges(session, _as(settings, me, tmp_path), model.id, [rid], CHECKPOINTS, [], "w")
    assert mark_absent(session, settings, "reaper", utcnow()) == 0  # not silent long enough
    later = utcnow() + timedelta(seconds=settings.host_absent_after_seconds + 1)
    assert mark_absent(session, settings, "reaper", later) >= 1
    section = hosts_section(session, model.id, rid)
    assert (section["confirmed"], section["absent"], section["total"]) == (1, 1, 2)
    assert "deleted on 1 of 2 servers" in section["words"] and "absent" in section["words"]
    # It comes back: it deletes what it holds and confirms, late.
    assert acknowledge(session, _as(settings, other, tmp_path), "api", model_id=model.id) == 1
    assert hosts_section(session, model.id, rid)["confirmed"] == 2


def test_once_no_host_is_pending_the_certificate_is_issued_again_with_the_hosts(
    session: Session, settings: Settings, tmp_path: Path
) -> None:
    me, other = f"self-{_tag()}", f"other-{_tag()}"
    _host(session, other, timedelta(seconds=1))
    model = bare_generative_model(session, "ft")
    new = NewRequest(
        subject_identifier=f"hosts-{_tag()}@example.org",
        reason="art 17",
        scope=None,
        forget=None,
        idempotency_key=None,
        identity_required=False,
    )
    request, _ = file_request(session, settings, new, actor="test")
    action = RequestAction(
        request_id=request.id,
        model_id=model.id,
        strategy=Strategy.exact_retrain,
        status=ActionStatus.done,
    )
    session.add(action)
    session.flush()
    rid = str(request.id)
    record_purges(session, _as(settings, me, tmp_path), model.id, [rid], CHECKPOINTS, [], "w")
    body = {"kind": "exact_retrain", "request_id": rid, "plain_words": "Removed."}
    issue_certificate(session, action, model, body, "worker")  # type: ignore[arg-type]
    acknowledge(session, _as(settings, other, tmp_path), "api")
    current = current_certificate(session, request.id, model.id)
    assert current is not None and current.supersedes_id is not None
    assert current.body["hosts"]["confirmed"] == 2 and current.body["hosts"]["pending"] == 0
    assert current.body["plain_words"] == (
        "Removed. The local copies of the model's old version were deleted on 2 of 2 servers "
        "that serve this model, each confirming it."
    )
