"""process_request: plan one action per model in scope and fan out the work (service.planner)."""

from __future__ import annotations

import uuid

from celery import shared_task

from service.exact.physical import reclaim_space, take_purged
from service.planner.plan import PlanResult, plan_request
from service.queue.names import TASK_PROCESS_REQUEST
from workers.base import DbTask, db_task_options

ACTOR = "worker"
# While a model is being trained its record set is in flux: plan again a little later.
TRAINING_RETRY_S = 15


@shared_task(name=TASK_PROCESS_REQUEST, **db_task_options(max_retries=10))
def process_request(self: DbTask, request_id: str) -> str:
    with self.transaction() as session:
        outcome = plan_request(session, self.settings, uuid.UUID(request_id), ACTOR)
        purged = take_purged(session)
    # Rows of a model nothing had learned from were purged at planning: reclaim after commit.
    reclaim_space(self, purged, ACTOR)
    if outcome == PlanResult.model_training:
        raise self.retry(countdown=TRAINING_RETRY_S, max_retries=240)
    return outcome.value
