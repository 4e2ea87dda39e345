"""ML tasks for generative models lethe fine-tunes, on the ``ml`` queue: the first (sliced)
fine-tune, and the exact removal of subjects after their rules went live (policy ``both``).

Each task: load (one transaction) → compute in service.finetune (no transaction open) → record
(one transaction). Checkpoints are content-addressed, so a redelivered task finds the slices it
already trained.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from sqlalchemy.exc import IntegrityError

from service.core.skip import Skip
from service.exact.physical import reclaim_space, take_purged
from service.exact.publish import PublishResult
from service.finetune.publish import destroy_artifacts, finish_exact, publish_exact
from service.finetune.retrain import UnfinishedExact, load_exact, retrain_exact
from service.finetune.training import load_finetune, record_finetune, run_finetune
from service.jobs import lifecycle as jobs
from service.queue.names import TASK_FINETUNE_MODEL, TASK_FINETUNE_RETRAIN
from workers.base import DbTask, db_task_options, give_up_or_retry, wait_turn
from workers.progress import progress_reporter

log = logging.getLogger(__name__)
ACTOR = "worker"


@shared_task(name=TASK_FINETUNE_MODEL, **db_task_options(max_retries=5))
def finetune_model(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    with self.transaction() as session:
        inputs = load_finetune(session, self.settings, jid)
    if isinstance(inputs, Skip):
        return inputs.value
    try:
        outcome = run_finetune(self.settings, inputs, progress_reporter(self, jid))
    except Exception as exc:
        give_up_or_retry(self, jid, "training_error", exc)
        raise
    with self.transaction() as session:
        skipped = record_finetune(session, inputs, outcome, ACTOR)
    return "done" if skipped is None else skipped.value


@shared_task(name=TASK_FINETUNE_RETRAIN, **db_task_options(max_retries=5))
def finetune_retrain(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    try:
        with self.transaction() as session:
            inputs = load_exact(session, self.settings, jid)
    except IntegrityError:
        # Another exact retrain of this model is running; this one waits its turn.
        return wait_turn(self, job_id)
    if isinstance(inputs, Skip):
        return inputs.value
    if isinstance(inputs, UnfinishedExact):  # published before the task stopped: close it
        superseded = list(inputs.outcome.superseded_checkpoints)
        destroyed = destroy_artifacts(self.settings, superseded)
        with self.transaction() as session:
            finish_exact(
                session, self.settings, inputs.model_id, jid, inputs.outcome, destroyed, ACTOR
            )
            purged = take_purged(session)
        reclaim_space(self, purged, ACTOR)
        return "finished"
    try:
        outcome = retrain_exact(self.settings, inputs, progress_reporter(self, jid))
    except Exception as exc:
        give_up_or_retry(self, jid, "retrain_error", exc)
        raise
    with self.transaction() as session:
        published = publish_exact(session, self.settings, inputs, outcome, ACTOR)
    if published != PublishResult.done:
        return published.value
    # The new version serves from here on: what saw the subjects can go.
    try:
        destroyed = destroy_artifacts(self.settings, list(outcome.superseded_checkpoints))
    except Exception as exc:
        # Published, not closed: the redelivered task finds the job done and finishes it.
        log.error("job %s: destroying artifacts failed (%s)", jid, type(exc).__name__)
        raise self.retry(countdown=jobs.RETRY_DELAY_S) from None
    with self.transaction() as session:
        finish_exact(session, self.settings, inputs.model_id, jid, outcome, destroyed, ACTOR)
        purged = take_purged(session)
    # VACUUM cannot run inside a transaction: the purge committed above, reclaim its space now.
    reclaim_space(self, purged, ACTOR)
    return published.value
