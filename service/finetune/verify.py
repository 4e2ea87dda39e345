"""The from-scratch check of a restored fine-tune, as its own job off the critical path.

The removal is already in force when it runs (the switched-off version, then the restored one,
serve). It is sent with the switch-off: the checkpoint the restore will store is addressed by
the retained records, so the check fine-tunes from scratch on them beside the restore (another
worker process where one is free) and compares every adapter and optimizer tensor once the
restore is published. A match supersedes the restore's certificate with one that says so; a
mismatch says so too and re-opens the request's action, in the audit log and so in the
console. A killed check leaves its job running; the reaper sends it again and it re-runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.finetune import (
    FinetuneConfig,
    FinetuneRecord,
    FreshRun,
    compare_with_stored,
    restored_checkpoint,
    train_sliced_in_memory,
)
from service.audit import append_event
from service.core.config import Settings
from service.core.skip import Skip
from service.core.storage import artifact_store
from service.db.enums import JobKind, JobStatus
from service.db.tables import ActionJob, ErasureRequest, Job, MlModel
from service.erasure.certificates import (
    ExactRetrainCertificate,
    current_certificate,
    describe_exact,
    issue_certificate,
)
from service.erasure.host_purges import with_hosts
from service.erasure.lifecycle import reopen_action
from service.erasure.retrain_outcomes import ExactnessResult, FinetuneExactness
from service.finetune.records import load_records
from service.finetune.retrain import ExactInputs
from service.finetune.training import slices_progress
from service.jobs import lifecycle as jobs
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_FINETUNE_VERIFY
from service.rules.finetuned_serving import served_version

CHECK_FAILED = "bit_exact_check_failed"


def open_verify(
    session: Session,
    settings: Settings,
    model_id: uuid.UUID,
    restore_job_id: uuid.UUID,
    checkpoint: str,
    retained_keys: Sequence[str],
    order_checkpoints: Sequence[str] = (),
) -> Job | None:
    """A check job for the restore of ``restore_job_id``, serving the same actions; sent after
    commit. Opened at switch-off, so the from-scratch fine-tune runs beside the restore (another
    worker process where one is free); opened again after the restore publishes (a switch-off
    finished on redelivery): ``None`` when a check of that checkpoint is already open.
    ``order_checkpoints``: a fine-tune kept in several slice orders, the last checkpoint of
    each order's restore (``checkpoint`` is the first's), all checked."""
    restore = str(restore_job_id)
    for existing in session.scalars(
        select(Job).where(Job.kind == JobKind.finetune_verify, Job.model_id == model_id)
    ):
        result = existing.result or {}
        if result.get("restore_job") == restore and result.get("checkpoint") == checkpoint:
            return None
    job = Job(
        id=uuid.uuid4(),
        kind=JobKind.finetune_verify,
        model_id=model_id,
        shard=None,
        status=JobStatus.pending,
        result={
            "checkpoint": checkpoint,
            "retained_keys": sorted(retained_keys),
            "restore_job": restore,
            **({"order_checkpoints": list(order_checkpoints)} if order_checkpoints else {}),
        },
    )
    session.add(job)
    session.flush()
    for action in jobs.actions_waiting_for(session, restore_job_id):
        session.add(ActionJob(action_id=action.id, job_id=job.id))
    session.flush()
    enqueue_after_commit(session, settings, TASK_FINETUNE_VERIFY, [str(job.id)])
    return job


def planned_check(inputs: ExactInputs) -> tuple[str, list[str], list[str]]:
    """The checkpoint the restore of ``inputs`` will store last (its first order's), the keys
    of the records it trains on, and with several slice orders each order's last checkpoint,
    before it trains (checkpoints are addressed by their records)."""
    served = inputs.served
    planned = [
        restored_checkpoint(order.config, inputs.records, inputs.erase_subjects, served.base_id)
        for order in served.orders
    ]
    checkpoint, retained = planned[0]
    orders = [c for c, _ in planned] if len(planned) > 1 else []
    return checkpoint, [r.key for r in retained], orders


@dataclass(frozen=True)
class VerifyInputs:
    job_id: uuid.UUID
    model_id: uuid.UUID
    base_dir: Path
    base_id: str
    checkpoint: str
    """The restore's first order's last checkpoint (what it publishes as serving)."""
    records: list[FinetuneRecord]
    checks: tuple[tuple[FinetuneConfig, str], ...]
    """Each slice order's config and the restored checkpoint to compare (one: one order)."""
    restore_job_id: uuid.UUID | None = None
    """The restore whose checkpoint is checked (None: a check opened before it was recorded)."""


def load_verify(session: Session, settings: Settings, job_id: uuid.UUID) -> VerifyInputs | Skip:
    """Claim the check and read the records the restore trains on; ``superseded`` when a
    later erasure took some of them (that erasure's own restore is checked instead)."""
    job = jobs.claim(session, job_id)
    if job is None:
        return Skip.not_claimed
    model = session.get_one(MlModel, job.model_id)
    keys = set(job.result["retained_keys"])
    records = [
        r for r in load_records(session, settings, model.id, include_claimed=True) if r.key in keys
    ]
    if len(records) != len(keys):
        jobs.finish(session, job, {**job.result, "skipped": Skip.superseded.value})
        return Skip.superseded
    served = served_version(session, model)
    restore = job.result.get("restore_job")
    checkpoints = job.result.get("order_checkpoints") or [job.result["checkpoint"]]
    return VerifyInputs(
        job_id=job.id,
        model_id=model.id,
        base_dir=Path(served.base_dir),
        base_id=served.base_id,
        checkpoint=str(job.result["checkpoint"]),
        records=records,
        checks=tuple(
            (order.config, str(checkpoint))
            for order, checkpoint in zip(served.orders, checkpoints, strict=True)
        ),
        restore_job_id=uuid.UUID(restore) if restore else None,
    )


class RestoreState(StrEnum):
    """Where the checked restore stands when the from-scratch fine-tune is done."""

    published = "published"
    """Its checkpoint is stored and its certificate issued: compare now."""
    running = "running"
    """A live worker is still training it: wait."""
    not_running = "not_running"
    """Waiting for a retry, or re-queued: this check runs again later."""
    ended = "ended"
    """Failed, or published another checkpoint (records claimed meanwhile): nothing to
    compare (its own check covers the other checkpoint)."""


def restore_state(session: Session, inputs: VerifyInputs) -> RestoreState:
    if inputs.restore_job_id is None:
        return RestoreState.published
    job = session.get(Job, inputs.restore_job_id)
    if job is None or job.status == JobStatus.failed:
        return RestoreState.ended
    if job.status == JobStatus.done:
        published = (job.result or {}).get("checkpoint_after") == inputs.checkpoint
        return RestoreState.published if published else RestoreState.ended
    return RestoreState.running if job.status == JobStatus.running else RestoreState.not_running


def train_check(
    inputs: VerifyInputs, progress: Callable[[float], None]
) -> tuple[float, list[FreshRun]]:
    """The from-scratch fine-tune of every slice order on the records (no transaction; nothing
    read or written): when it started, and one run per order."""
    started = time.perf_counter()
    parts = len(inputs.checks)
    fresh = [
        FreshRun.of(
            train_sliced_in_memory(
                inputs.base_dir,
                config,
                inputs.records,
                base_id=inputs.base_id,
                progress=slices_progress(progress, index, parts),
            )
        )
        for index, (config, _) in enumerate(inputs.checks)
    ]
    return started, fresh


def compare_check(
    settings: Settings, inputs: VerifyInputs, started: float, fresh: Sequence[FreshRun]
) -> FinetuneExactness:
    """Compare each order's from-scratch run with the restore's stored checkpoint of that
    order, tensor by tensor; bit-exact only when every order is."""
    store = artifact_store(settings)
    several = len(inputs.checks) > 1
    compared, seconds = 0, 0.0
    mismatched: list[str] = []
    for index, ((_, checkpoint), run) in enumerate(zip(inputs.checks, fresh, strict=True)):
        check = compare_with_stored(run, checkpoint, store, started)
        compared += check.tensors_compared
        mismatched += [f"order {index}: {m}" if several else m for m in check.mismatched]
        seconds = check.seconds
    return FinetuneExactness(
        status=ExactnessResult.of(not mismatched),
        tensors_compared=compared,
        mismatched=tuple(mismatched[:20]),
        seconds=round(seconds, 4),
        full_finetune_seconds=round(sum(r.result.seconds for r in fresh), 4),
        orders_checked=len(fresh) if several else None,
    )


def skip_check(session: Session, inputs: VerifyInputs, why: Skip) -> Skip:
    """The restore it checks ended without publishing that checkpoint: close the check."""
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    jobs.finish(session, job, {**job.result, "skipped": why.value})
    return why


def record_verify(
    session: Session, inputs: VerifyInputs, exactness: FinetuneExactness, actor: str
) -> int | Skip:
    """Finish the check; supersede each action's restore certificate with its result, and
    re-open the action when it failed. Returns how many certificates were issued."""
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    model = session.get_one(MlModel, inputs.model_id, with_for_update=True)
    jobs.finish(session, job, {**job.result, "exactness": exactness.to_json()})
    append_event(
        session,
        actor=actor,
        action="model.exactness_checked",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "checkpoint": inputs.checkpoint,
            "job_id": str(job.id),
            "exactness": exactness.to_json(),
        },
    )
    issued = 0
    for action in jobs.actions_waiting_for(session, job.id):
        previous = current_certificate(session, action.request_id, model.id)
        slices = (previous.body.get("slices") or {}) if previous is not None else {}
        if previous is None or slices.get("checkpoint_after") != inputs.checkpoint:
            continue
        body = with_hosts(session, _checked(previous.body, exactness), model.id)
        issue_certificate(session, action, model, body, actor)
        issued += 1
        if exactness.status != ExactnessResult.bit_exact:
            request = session.get_one(ErasureRequest, action.request_id, with_for_update=True)
            reopen_action(
                session, action, request, CHECK_FAILED, actor=actor, model_name=model.name
            )
    return issued


def _checked(body: dict[str, Any], exactness: FinetuneExactness) -> ExactRetrainCertificate:
    checked = cast(ExactRetrainCertificate, dict(body))
    checked["slices"] = {**body["slices"], "exactness": exactness.to_json()}
    checked["determinism_check"] = exactness.status.value
    words = describe_exact(checked)
    destroyed = body.get("destroyed_artifacts") or []
    if destroyed:
        words += (
            f" {len(destroyed)} artifact(s) that had seen the records were destroyed (listed "
            "with their hashes and times)."
        )
    checked["plain_words"] = words
    return checked
