"""Closing an exact action: its certificate, then the erased rows' content deleted."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings, get_settings
from service.core.subject_keys import subject_keys
from service.db.base import utcnow
from service.db.enums import ActionStatus, RecordSplit
from service.db.tables import ErasureRequest, MlModel, RequestAction, TrainingRecord
from service.erasure.certificates import exact_certificate, issue_certificate
from service.erasure.lifecycle import move_action
from service.erasure.retrain_outcomes import ShardRetrainOutcome
from service.exact.physical import mark_purged, physical_deletion_claim
from service.exact.public_base import attestation
from service.registry.config import ModelConfig


@dataclass(frozen=True)
class Purge:
    records: int
    # The subject keys destroyed, as "<key bundle>#<subject ref>" (none when the records were
    # stored in clear).
    keys_destroyed: list[str]


def purge_records(session: Session, request_id: uuid.UUID, model_id: uuid.UUID) -> Purge:
    """Delete the erased rows' content and destroy their subjects' keys of this model (every
    copy of the sealed rows, in page free space, WAL and backups, is then unreadable); the
    index row stays as a tombstone for the audit. The old row versions stay in the table's
    pages until the VACUUM the task wrapper runs after commit (service.exact.physical)."""
    claimed = (
        TrainingRecord.model_id == model_id,
        TrainingRecord.erasure_request_id == request_id,
        TrainingRecord.erased_at.is_(None),
    )
    subjects = set(session.scalars(select(TrainingRecord.subject_ref).where(*claimed)))
    result = session.execute(
        update(TrainingRecord).where(*claimed).values(payload=None, label=None, erased_at=utcnow())
    )
    purged = int(result.rowcount)  # type: ignore[attr-defined]
    if purged:
        mark_purged(session, TrainingRecord.__tablename__, request_id)
    if not subjects:
        return Purge(purged, [])
    # One rewrite of a model's key bundles at a time (two erasures of one model).
    session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"subject-keys:{model_id}"}
    )
    keys = subject_keys(get_settings(), model_id)
    destroyed = keys.destroy(subjects)
    return Purge(purged, destroyed)


def records_erased(session: Session, request_id: uuid.UUID, model_id: uuid.UUID) -> dict[str, int]:
    rows = session.execute(
        select(TrainingRecord.split, func.count())
        .where(TrainingRecord.model_id == model_id, TrainingRecord.erasure_request_id == request_id)
        .group_by(TrainingRecord.split)
    ).all()
    counts = {split.value: 0 for split in RecordSplit}
    counts.update({RecordSplit(split).value: int(n) for split, n in rows})
    return counts


def finish_exact_action(
    session: Session,
    settings: Settings,
    action: RequestAction,
    request: ErasureRequest,
    model: MlModel,
    *,
    shards: Sequence[ShardRetrainOutcome],
    version_before: int | None,
    version_after: int | None,
    actor: str,
    note: str | None = None,
) -> None:
    # Purged first: the certificate names the keys actually destroyed (one transaction).
    purge = purge_records(session, request.id, model.id)
    body = exact_certificate(
        request=request,
        model=model,
        shards=shards,
        records_erased=records_erased(session, request.id, model.id),
        version_before=version_before,
        version_after=version_after,
        note=note,
        public_base=attestation(ModelConfig.model_validate(model.config).public_base),
        warnings=[f"retrained shard {s.shard}: {s.too_small}" for s in shards if s.too_small],
        physical_deletion=physical_deletion_claim(settings, purge.keys_destroyed),
    )
    issue_certificate(session, action, model, body, actor)
    move_action(session, action, ActionStatus.done, actor=actor, model_name=model.name)
    record_erased(session, request, model, purge, actor)


def record_erased(
    session: Session, request: ErasureRequest, model: MlModel, purge: Purge, actor: str
) -> None:
    append_event(
        session,
        actor=actor,
        action="records.erased",
        target_type="model",
        target_id=str(model.id),
        request_id=request.id,
        details={
            "model": model.name,
            "records": purge.records,
            "keys_destroyed": purge.keys_destroyed,
        },
    )
