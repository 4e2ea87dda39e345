"""ML tasks for models lethe trains, on the ``ml`` queue: a model's first training and one
shard's retrain after an erasure.

Each task: load (one transaction) → compute in service.exact (no transaction open) → record (one
transaction). Checkpoints are content-addressed, so a redelivered task finds the slices it
already trained and does not train them again.
"""

from __future__ import annotations

import uuid

from celery import shared_task
from sqlalchemy.exc import IntegrityError

from models.sisa import Manifest
from service.core.errors import DomainError
from service.core.skip import Skip
from service.exact.physical import reclaim_space, take_purged
from service.exact.publish import (
    PublishResult,
    destroy_checkpoints,
    publish_retrain,
    record_destroyed,
)
from service.exact.retrain import load_retrain, retrain, served_finals
from service.exact.training import load_training, record_training, train_all
from service.queue.names import TASK_RETRAIN_SHARD, TASK_TRAIN_MODEL
from workers.base import DbTask, db_task_options, give_up_or_retry, wait_turn
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


@shared_task(name=TASK_RETRAIN_SHARD, **db_task_options(max_retries=5))
def retrain_shard(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    try:
        with self.transaction() as session:
            inputs = load_retrain(session, jid)
    except IntegrityError:
        # Another retrain of this shard is running; this one waits its turn.
        return wait_turn(self, job_id)
    except DomainError as exc:
        give_up_or_retry(self, jid, exc.code, None)
        return "failed"
    if isinstance(inputs, Skip):
        return inputs.value
    if inputs.snapshot.manifest is None:
        give_up_or_retry(self, jid, "model_not_trained", None)
        return "failed"

    def served() -> Manifest:
        with self.transaction(audited=False) as session:
            return served_finals(session, inputs.snapshot.model_id)

    try:
        outcome = retrain(self.settings, inputs, progress_reporter(self, jid), served)
    except Exception as exc:
        give_up_or_retry(self, jid, "retrain_error", exc)
        raise
    with self.transaction() as session:
        published = publish_retrain(session, self.settings, inputs, outcome, ACTOR)
        purged = take_purged(session)
    # VACUUM cannot run inside a transaction: the purge committed above, reclaim its space now.
    reclaim_space(self, purged, ACTOR)
    if published == PublishResult.done and outcome.superseded_checkpoints:
        superseded = list(outcome.superseded_checkpoints)
        deleted = destroy_checkpoints(self.settings, superseded)
        with self.transaction() as session:
            record_destroyed(session, inputs, superseded, deleted, ACTOR)
    return published.value
