"""The (S, R) plan of a model lethe trains, on the ``ml`` queue: load (one transaction) →
``service.exact.sisa_plan.compute_plan`` (no transaction open) → record (one transaction)."""

from __future__ import annotations

import uuid

from celery import shared_task

from service.core.errors import DomainError
from service.core.skip import Skip
from service.exact.sisa_plan import compute_plan, load_plan, record_plan
from service.queue.names import TASK_PLAN_SISA
from workers.base import DbTask, db_task_options, give_up_or_retry
from workers.progress import progress_reporter
from workers.tasks.exact import ACTOR


@shared_task(name=TASK_PLAN_SISA, **db_task_options(max_retries=5))
def plan_sisa_task(self: DbTask, job_id: str) -> str:
    jid = uuid.UUID(job_id)
    try:
        with self.transaction() as session:
            inputs = load_plan(session, jid)
    except DomainError as exc:
        give_up_or_retry(self, jid, exc.code, None)
        return "failed"
    if isinstance(inputs, Skip):
        return inputs.value
    try:
        plan = compute_plan(inputs, progress_reporter(self, jid))
    except ValueError:
        # Too few records, or no usable candidate: retrying cannot help.
        give_up_or_retry(self, jid, "plan_not_possible", None)
        return "failed"
    except Exception as exc:
        give_up_or_retry(self, jid, "plan_error", exc)
        raise
    with self.transaction() as session:
        skipped = record_plan(session, inputs, plan, ACTOR)
    return "done" if skipped is None else skipped.value
