"""Publishing a retrain after an erasure as the model's next version, for both wings (a
shard, a fine-tune): the version row, the older versions that can no longer load, and whether
a request claimed, while the retrain ran, records it trained on (it must then run again)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.enums import VersionCause
from service.db.tables import MlModel, ModelVersion, TrainingRecord
from service.registry.service import add_version


def claimed_while_training(
    session: Session, model_id: uuid.UUID, trained_keys: Collection[str], shard: int | None = None
) -> bool:
    """Whether a request now claims (and has not yet erased) a record the retrain trained on
    (of ``shard`` only, when given)."""
    query = select(TrainingRecord.record_key).where(
        TrainingRecord.model_id == model_id,
        TrainingRecord.erasure_request_id.is_not(None),
        TrainingRecord.erased_at.is_(None),
    )
    if shard is not None:
        query = query.where(TrainingRecord.shard == shard)
    return bool(set(session.scalars(query)) & set(trained_keys))


def add_erasure_version(
    session: Session,
    model: MlModel,
    *,
    manifest: dict[str, Any],
    manifest_hash: str,
    request_ids: list[str],
    metrics: dict[str, Any],
) -> int:
    """The model's next version after an erasure, serving from now on (the model row is locked
    by the caller); returns its number."""
    return add_version(
        session,
        model,
        VersionCause.erasure,
        manifest=manifest,
        manifest_hash=manifest_hash,
        request_ids=request_ids,
        metrics=metrics,
    )


def mark_purged_versions(
    session: Session, model_id: uuid.UUID, needs_destroyed: Callable[[ModelVersion], bool]
) -> None:
    """Older versions that need a checkpoint about to be destroyed can no longer be loaded:
    say so."""
    for version in session.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model_id, ModelVersion.purged_at.is_(None)
        )
    ):
        if needs_destroyed(version):
            version.purged_at = utcnow()
