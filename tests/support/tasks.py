"""Running worker tasks in process: every task the outbox sent, as a worker would.

The tasks open their sessions through ``DbTask.factory_override``: the ``task_factory`` fixture
(tests/conftest.py) points it at the test's session."""

from __future__ import annotations

from typing import Any

from service.queue.names import (
    TASK_CALIBRATE_BUDGET,
    TASK_FINETUNE_MODEL,
    TASK_FINETUNE_RETRAIN,
    TASK_FINETUNE_VERIFY,
    TASK_PLAN_SISA,
    TASK_PROCESS_REQUEST,
    TASK_RETRAIN_SHARD,
    TASK_TRAIN_MODEL,
    TASK_UPDATE_VERIFIER_RULES,
)
from tests.support.api import SentTasks


def drain(sent: SentTasks) -> list[tuple[str, Any]]:
    """Run every task the outbox sent, as a worker would, until none is left."""
    from workers.tasks.exact import retrain_shard, train_model
    from workers.tasks.finetune import finetune_model, finetune_retrain, finetune_verify
    from workers.tasks.planning import plan_sisa_task
    from workers.tasks.requests import process_request
    from workers.tasks.rules import calibrate_budget_task, update_verifier_rules

    tasks = {
        TASK_PROCESS_REQUEST: process_request,
        TASK_RETRAIN_SHARD: retrain_shard,
        TASK_TRAIN_MODEL: train_model,
        TASK_UPDATE_VERIFIER_RULES: update_verifier_rules,
        TASK_CALIBRATE_BUDGET: calibrate_budget_task,
        TASK_FINETUNE_MODEL: finetune_model,
        TASK_FINETUNE_RETRAIN: finetune_retrain,
        TASK_FINETUNE_VERIFY: finetune_verify,
        TASK_PLAN_SISA: plan_sisa_task,
    }
    ran = []
    while sent.sent:
        name, args, _ = sent.sent.pop(0)
        ran.append((name, tasks[name](*args)))
    return ran
