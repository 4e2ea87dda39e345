"""Task names and queues: the contract between the API (which sends by name) and workers."""

from __future__ import annotations

from typing import Final

QUEUE_REQUESTS: Final = "requests"
QUEUE_ML: Final = "ml"

TASK_PROCESS_REQUEST: Final = "lethe.process_request"
TASK_RETRAIN_SHARD: Final = "lethe.retrain_shard"
TASK_TRAIN_MODEL: Final = "lethe.train_model"
TASK_UPDATE_VERIFIER_RULES: Final = "lethe.update_verifier_rules"
TASK_CALIBRATE_BUDGET: Final = "lethe.calibrate_budget"
TASK_REAP_STUCK_JOBS: Final = "lethe.reap_stuck_jobs"
TASK_FINETUNE_MODEL: Final = "lethe.finetune_model"
TASK_FINETUNE_RETRAIN: Final = "lethe.finetune_retrain"
TASK_PLAN_SISA: Final = "lethe.plan_sisa"
TASK_FINETUNE_VERIFY: Final = "lethe.finetune_verify"
TASK_DISPATCH_LATER: Final = "lethe.dispatch_later"
TASK_SHRED_KEYS: Final = "lethe.shred_keys"

TASK_QUEUES: Final = {
    TASK_PROCESS_REQUEST: QUEUE_REQUESTS,
    TASK_REAP_STUCK_JOBS: QUEUE_REQUESTS,
    TASK_DISPATCH_LATER: QUEUE_REQUESTS,
    TASK_SHRED_KEYS: QUEUE_REQUESTS,
    # Activating rules embeds and scores text (no generation, no training) and is what stops a
    # leak: it must not wait behind a retrain or a budget calibration on the ML queue.
    TASK_UPDATE_VERIFIER_RULES: QUEUE_REQUESTS,
    TASK_RETRAIN_SHARD: QUEUE_ML,
    TASK_TRAIN_MODEL: QUEUE_ML,
    TASK_CALIBRATE_BUDGET: QUEUE_ML,
    TASK_FINETUNE_MODEL: QUEUE_ML,
    TASK_FINETUNE_RETRAIN: QUEUE_ML,
    TASK_PLAN_SISA: QUEUE_ML,
    # The from-scratch check of a restored fine-tune: a whole fine-tune, off the critical path.
    TASK_FINETUNE_VERIFY: QUEUE_ML,
}
