"""ML tasks for models lethe trains, on the ``ml`` queue: a model's first training and one
shard's retrain after an erasure.

Training: load (one transaction) → compute in service.exact (no transaction open) → record (one
transaction). A shard's retrain runs the slice-retrain pipeline (workers.slice_retrain) with the
shard's stages. Checkpoints are content-addressed, so a redelivered task finds the slices it
already trained and does not train them again.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task
from sqlalchemy.orm import Session

from models.sisa import Manifest
from service.core.config import Settings
from service.core.errors import DomainError
from service.core.skip import Skip
from service.erasure.retrain_outcomes import PublishedRetrain, ShardRetrainOutcome
from service.exact.publish import (
    PublishResult,
    certify_retrain,
    destroy_checkpoints,
    publish_retrain,
)
from service.exact.retrain import RetrainInputs, load_retrain, retrain, served_finals
from service.exact.training import load_training, record_training, train_all
from service.queue.names import TASK_RETRAIN_SHARD, TASK_TRAIN_MODEL
from workers import slice_retrain as pipeline
from workers.base import DbTask, db_task_options, give_up_or_retry
from workers.progress import progress_reporter

ACTOR = "worker"


@shared_task(name=TASK_TRAIN_MODEL, **db_task_options(max_retries=5))
def train_model(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    try:
        with self.transaction() as session:
            inputs = load_training(session, jid)
    except DomainError as exc:
        # The model's inputs are unusable (e.g. its public base changed): retrying cannot help.
        give_up_or_retry(self, jid, exc.code, None)
        return "failed"
    if isinstance(inputs, Skip):
        return inputs.value
    try:
        outcome = train_all(self.settings, inputs, progress_reporter(self, jid))
    except Exception as exc:
        give_up_or_retry(self, jid, "training_error", exc)
        raise
    with self.transaction() as session:
        skipped = record_training(session, inputs, outcome, ACTOR)
    return "done" if skipped is None else skipped.value


class ShardRetrainStages:
    """A shard's stages of the slice-retrain pipeline (workers.slice_retrain)."""

    def load(
        self, session: Session, settings: Settings, job_id: uuid.UUID
    ) -> RetrainInputs | PublishedRetrain[ShardRetrainOutcome] | Skip:
        return load_retrain(session, job_id)

    def publish(
        self,
        session: Session,
        settings: Settings,
        inputs: RetrainInputs,
        outcome: ShardRetrainOutcome,
    ) -> PublishResult | Skip:
        return publish_retrain(session, settings, inputs, outcome, ACTOR)

    def destroy(self, settings: Settings, checkpoints: list[str]) -> list[dict[str, Any]]:
        return destroy_checkpoints(settings, checkpoints)

    def certify(
        self,
        session: Session,
        settings: Settings,
        inputs: RetrainInputs | None,
        retrain: PublishedRetrain[ShardRetrainOutcome],
        destroyed: list[dict[str, Any]],
    ) -> None:
        certify_retrain(
            session, settings, retrain.model_id, retrain.job_id, retrain.outcome, destroyed, ACTOR
        )


STAGES = ShardRetrainStages()


@shared_task(name=TASK_RETRAIN_SHARD, **db_task_options(max_retries=5))
def retrain_shard(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    inputs = pipeline.load(self, jid, STAGES)
    if isinstance(inputs, str):
        return inputs
    if inputs.snapshot.manifest is None:
        give_up_or_retry(self, jid, "model_not_trained", None)
        return "failed"

    def served() -> Manifest:
        with self.transaction(audited=False) as session:
            return served_finals(session, inputs.snapshot.model_id)

    outcome = pipeline.unlearn(
        self, jid, lambda: retrain(self.settings, inputs, progress_reporter(self, jid), served)
    )
    published = PublishedRetrain(jid, inputs.snapshot.model_id, outcome)
    return pipeline.publish_destroy_certify(self, STAGES, inputs, published)
