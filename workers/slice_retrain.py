"""The one pipeline of an exact slice retrain, for both wings (a SISA shard, a fine-tune):

    load (one transaction) → unlearn (none open) → publish (one transaction)
        → destroy (none open) → certify (one transaction) → reclaim the purged rows' space

Each wing supplies its stages (``RetrainStages``: service.exact for a shard, service.finetune
for a fine-tune); this module owns the transactions between them, their order and what a
failure between them leaves. Certificates come after the destruction, so a certificate never
claims the destruction of a checkpoint that still exists; a run stopped after publishing is
closed by the next delivery of its task (the loader returns its ``PublishedRetrain``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.core.config import Settings
from service.core.errors import DomainError
from service.core.skip import Skip
from service.erasure.retrain_outcomes import (
    FinetuneRetrainOutcome,
    PublishedRetrain,
    ShardRetrainOutcome,
)
from service.exact.physical import reclaim_space, take_purged
from service.exact.publish import PublishResult
from service.jobs import lifecycle as jobs
from service.queue.after_commit import enqueue_after_commit
from workers.base import DbTask, give_up_or_retry, wait_turn

log = logging.getLogger(__name__)
ACTOR = "worker"

InputsT = TypeVar("InputsT")
OutcomeT = TypeVar("OutcomeT", ShardRetrainOutcome, FinetuneRetrainOutcome)
T = TypeVar("T")


class RetrainStages(Protocol[InputsT, OutcomeT]):
    """What a wing does at each stage; the driver calls them in order."""

    def load(
        self, session: Session, settings: Settings, job_id: uuid.UUID
    ) -> InputsT | PublishedRetrain[OutcomeT] | Skip:
        """Claim the job and read its inputs (may raise IntegrityError: another retrain of
        the same shard or model runs)."""

    def publish(
        self, session: Session, settings: Settings, inputs: InputsT, outcome: OutcomeT
    ) -> PublishResult | Skip:
        """The outcome as the model's next version."""

    def destroy(self, settings: Settings, checkpoints: list[str]) -> list[dict[str, Any]]:
        """Delete what saw the erased records, once the new version serves; one entry each."""

    def certify(
        self,
        session: Session,
        settings: Settings,
        inputs: InputsT | None,
        published: PublishedRetrain[OutcomeT],
        destroyed: list[dict[str, Any]],
    ) -> None:
        """Record the destruction and close the waiting actions with their certificates
        (``inputs`` None: closing a run that stopped after publishing)."""


def load(
    task: DbTask, job_id: uuid.UUID, stages: RetrainStages[InputsT, OutcomeT]
) -> InputsT | str:
    """The job's inputs; a str says why this run ends (busy, skipped, failed, or a stopped
    run closed now)."""
    try:
        with task.transaction() as session:
            loaded = stages.load(session, task.settings, job_id)
    except IntegrityError:
        # Another retrain of this shard or model is running; this one waits its turn.
        return wait_turn(task, str(job_id))
    except DomainError as exc:
        # The inputs are unusable (e.g. the model's public base changed): retrying cannot help.
        give_up_or_retry(task, job_id, exc.code, None)
        return "failed"
    if isinstance(loaded, Skip):
        return loaded.value
    if isinstance(loaded, PublishedRetrain):
        return destroy_and_certify(task, stages, None, loaded) or "finished"
    return loaded


def unlearn(task: DbTask, job_id: uuid.UUID, work: Callable[[], T]) -> T:
    """Run the ML with no transaction open; a failure is retried while attempts remain."""
    try:
        return work()
    except Exception as exc:
        give_up_or_retry(task, job_id, "retrain_error", exc)
        raise


def publish_destroy_certify(
    task: DbTask,
    stages: RetrainStages[InputsT, OutcomeT],
    inputs: InputsT,
    retrain: PublishedRetrain[OutcomeT],
) -> str:
    """Publish ``retrain.outcome``, then destroy what it supersedes and certify; returns how the
    publish ended (``requeued`` also when the destruction failed and runs again)."""
    with task.transaction() as session:
        result = stages.publish(session, task.settings, inputs, retrain.outcome)
    if result != PublishResult.done:
        return result.value
    return destroy_and_certify(task, stages, inputs, retrain) or result.value


def destroy_and_certify(
    task: DbTask,
    stages: RetrainStages[InputsT, OutcomeT],
    inputs: InputsT | None,
    published: PublishedRetrain[OutcomeT],
) -> str | None:
    """Destroy (no transaction), certify (one), reclaim the purged rows' space; None when
    done, ``requeued`` when the destruction failed (the job's task runs again and closes it)."""
    try:
        destroyed = stages.destroy(task.settings, list(published.outcome.superseded_checkpoints))
    except Exception as exc:
        log.error("job %s: destroying artifacts failed (%s)", published.job_id, type(exc).__name__)
        _run_again(task, published.job_id, type(exc).__name__)
        return "requeued"
    with task.transaction() as session:
        jobs.clear_destroy_failures(session, published.job_id)
        stages.certify(session, task.settings, inputs, published, destroyed)
        purged = take_purged(session)
    # VACUUM cannot run inside a transaction: the purge committed above, reclaim its space now.
    reclaim_space(task, purged, ACTOR)
    return None


def _run_again(task: DbTask, job_id: uuid.UUID, error: str) -> None:
    """The destruction failed: recorded (service.jobs.lifecycle.record_destroy_failure), then a
    job still running goes back to pending and a published (done) one has its task sent again,
    which finds it unfinished and closes it, each after a delay that doubles per failure."""
    with task.transaction() as session:
        delay = jobs.record_destroy_failure(session, job_id, error, ACTOR)
        job = jobs.running_job(session, job_id)
        if job is not None:
            jobs.requeue(session, task.settings, job, countdown=delay)
        else:
            enqueue_after_commit(session, task.settings, task.name, [str(job_id)], countdown=delay)
