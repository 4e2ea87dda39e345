"""Closing an exact action: its certificate, then the erased rows' content deleted."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.db.base import utcnow
from service.db.enums import ActionStatus, RecordSplit
from service.db.tables import ErasureRequest, MlModel, RequestAction, TrainingRecord
from service.erasure.certificates import exact_certificate, issue_certificate
from service.erasure.lifecycle import move_action
from service.erasure.retrain_outcomes import ShardRetrainOutcome
from service.exact.physical import mark_purged, physical_deletion_claim
from service.exact.public_base import attestation
from service.registry.config import ModelConfig


def purge_records(session: Session, request_id: uuid.UUID, model_id: uuid.UUID) -> int:
    """Delete the erased rows' content; the index row stays as a tombstone for the audit.
    The old row versions stay in the table's pages until the VACUUM the task wrapper runs
    after commit (service.exact.physical)."""
    result = session.execute(
        update(TrainingRecord)
        .where(
            TrainingRecord.model_id == model_id,
            TrainingRecord.erasure_request_id == request_id,
            TrainingRecord.erased_at.is_(None),
        )
        .values(payload=None, label=None, erased_at=utcnow())
    )
    purged = int(result.rowcount)  # type: ignore[attr-defined]
    if purged:
        mark_purged(session, TrainingRecord.__tablename__, request_id)
    return purged


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
        physical_deletion=physical_deletion_claim(settings),
    )
    issue_certificate(session, action, model, body, actor)
    purged = purge_records(session, request.id, model.id)
    move_action(session, action, ActionStatus.done, actor=actor, model_name=model.name)
    append_event(
        session,
        actor=actor,
        action="records.erased",
        target_type="model",
        target_id=str(model.id),
        request_id=request.id,
        details={"model": model.name, "records": purged},
    )
