"""ML tasks for generative models lethe fine-tunes, on the ``ml`` queue: the first (sliced)
fine-tune, and the exact removal of subjects after their rules went live (policy ``both``).

Each task: load (one transaction) → compute in service.finetune (no transaction open) → record
(one transaction). Checkpoints are content-addressed, so a redelivered task finds the slices it
already trained.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import shared_task
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.skip import Skip
from service.erasure.retrain_outcomes import FinetuneRetrainOutcome, PublishedRetrain
from service.exact.publish import PublishResult
from service.finetune.publish import (
    certify_restored,
    destroy_artifacts,
    finish_exact,
    publish_exact,
)
from service.finetune.retrain import ExactInputs, load_exact
from service.finetune.switch_off import restore_exact, switch_exact
from service.finetune.training import load_finetune, record_finetune, run_finetune
from service.finetune.verify import (
    RestoreState,
    VerifyInputs,
    compare_check,
    load_verify,
    open_verify,
    planned_check,
    record_verify,
    restore_state,
    skip_check,
    train_check,
)
from service.jobs import lifecycle as jobs
from service.queue.names import TASK_FINETUNE_MODEL, TASK_FINETUNE_RETRAIN, TASK_FINETUNE_VERIFY
from workers import slice_retrain as pipeline
from workers.base import DbTask, db_task_options, give_up_or_retry
from workers.progress import progress_reporter

log = logging.getLogger(__name__)
ACTOR = "worker"
# The check, done before the restore, polls for it this often (a read, no lock held).
RESTORE_POLL_S = 1.0
RESTORE_WAIT_PROGRESS = 0.99


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


class FinetuneRetrainStages:
    """A fine-tune's stages of the slice-retrain pipeline (workers.slice_retrain), for its
    switch-off: the removal served at once; the restore after it is ``_restore``."""

    def load(
        self, session: Session, settings: Settings, job_id: uuid.UUID
    ) -> ExactInputs | PublishedRetrain[FinetuneRetrainOutcome] | Skip:
        return load_exact(session, settings, job_id)

    def publish(
        self,
        session: Session,
        settings: Settings,
        inputs: ExactInputs,
        outcome: FinetuneRetrainOutcome,
    ) -> PublishResult | Skip:
        return publish_exact(session, settings, inputs, outcome, ACTOR)

    def destroy(self, settings: Settings, checkpoints: list[str]) -> list[dict[str, Any]]:
        # The checkpoints and the serving weights merged from them, here and on every host.
        return destroy_artifacts(settings, checkpoints)

    def certify(
        self,
        session: Session,
        settings: Settings,
        inputs: ExactInputs | None,
        retrain: PublishedRetrain[FinetuneRetrainOutcome],
        destroyed: list[dict[str, Any]],
    ) -> None:
        model_id, job_id = retrain.model_id, retrain.job_id
        finish_exact(session, settings, model_id, job_id, retrain.outcome, destroyed, ACTOR)
        if inputs is not None and inputs.verify:
            # The check needs no restored weights to start: it fine-tunes from scratch beside
            # the restore (another worker process where one is free), off the critical path.
            open_verify(session, settings, model_id, job_id, *planned_check(inputs))


STAGES = FinetuneRetrainStages()


@shared_task(name=TASK_FINETUNE_RETRAIN, **db_task_options(max_retries=5))
def finetune_retrain(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    inputs = pipeline.load(self, jid, STAGES)
    if isinstance(inputs, str):
        return inputs
    switched = _switch_off(self, jid, inputs)
    if isinstance(switched, str):
        return switched
    return _restore(self, jid, inputs, switched)


def _switch_off(task: DbTask, jid: uuid.UUID, inputs: ExactInputs) -> FinetuneRetrainOutcome | str:
    """Serve the stored state before the subjects' first slice, destroy what saw them and
    close the actions with the certificate of the switch; a str says why this run stops."""
    outcome = pipeline.unlearn(task, jid, lambda: switch_exact(task.settings, inputs))
    if outcome.records_erased == 0 and inputs.switched is not None:
        return inputs.switched  # run again after its switch: only the restore is left
    published = PublishedRetrain(jid, inputs.model_id, outcome)
    result = pipeline.publish_destroy_certify(task, STAGES, inputs, published)
    return outcome if result == PublishResult.done else result


def _restore(
    task: DbTask, jid: uuid.UUID, inputs: ExactInputs, switched: FinetuneRetrainOutcome
) -> str:
    """Retrain the switched-off slices in the background and publish them, superseding the
    switch-off certificates; a failure leaves the removal in force."""
    report = progress_reporter(task, jid)
    outcome = pipeline.unlearn(
        task, jid, lambda: restore_exact(task.settings, inputs, switched, report)
    )
    with task.transaction() as session:
        published = publish_exact(session, task.settings, inputs, outcome, ACTOR)
        if published == PublishResult.done:
            certify_restored(session, task.settings, inputs.model_id, jid, outcome, ACTOR)
            if inputs.verify:  # opened at switch-off unless that run stopped before it
                open_verify(
                    session,
                    task.settings,
                    inputs.model_id,
                    jid,
                    outcome.checkpoint_after,
                    outcome.retained_keys,
                    [o.checkpoint_after for o in outcome.orders],
                )
    return published.value


@shared_task(name=TASK_FINETUNE_VERIFY, **db_task_options(max_retries=5))
def finetune_verify(self: DbTask, job_id: str) -> str:
    """The from-scratch check of a restore (service.finetune.verify): opened at switch-off, it
    fine-tunes from scratch beside the restore, then compares once the restore is published."""
    jid = uuid.UUID(job_id)
    with self.transaction() as session:
        inputs = load_verify(session, self.settings, jid)
    if isinstance(inputs, Skip):
        return inputs.value
    report = progress_reporter(self, jid)
    try:
        started, fresh = train_check(inputs, report)
    except Exception as exc:
        give_up_or_retry(self, jid, "verify_error", exc)
        raise
    state = _await_restore(self, inputs, report)
    if state != RestoreState.published:
        with self.transaction() as session:
            if state == RestoreState.ended:
                return skip_check(session, inputs, Skip.superseded).value
            job = jobs.running_job(session, jid)
            if job is not None:  # its restore waits for a retry: check again after it
                jobs.requeue(session, self.settings, job, countdown=jobs.RETRY_DELAY_S)
        return "requeued"
    try:
        exactness = compare_check(self.settings, inputs, started, fresh)
    except Exception as exc:
        give_up_or_retry(self, jid, "verify_error", exc)
        raise
    with self.transaction() as session:
        recorded = record_verify(session, inputs, exactness, ACTOR)
    return recorded.value if isinstance(recorded, Skip) else exactness.status.value


def _await_restore(
    task: DbTask, inputs: VerifyInputs, report: Callable[[float], None]
) -> RestoreState:
    """Wait while a live worker still trains the restore (the check finished first), keeping
    the check's heartbeat; no transaction is held while waiting."""
    while True:
        with task.transaction(audited=False) as session:
            state = restore_state(session, inputs)
        if state != RestoreState.running:
            return state
        report(RESTORE_WAIT_PROGRESS)
        time.sleep(RESTORE_POLL_S)
