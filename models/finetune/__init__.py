"""Sliced, deterministic fine-tuning of causal LMs, with exact unlearning of subjects.

Records are placed in R slices by a keyed hash of their subject (all of a subject's records in
one slice) and trained cumulatively, SISA-style, with LoRA adapters on the top layers and a
content-addressed checkpoint (adapter and optimizer state) after every slice. Erasing a subject
retrains from the checkpoint before its slice, on the retained records only; the result is
``torch.equal`` to fine-tuning from scratch on them, which ``verify_bit_exact`` checks.

Before any retraining, ``switch_off`` serves the stored checkpoint before the first affected
slice: the model trained without those slices, exact by construction. ``layered`` fine-tunes
(S3T) give every slice an adapter on a layer group of its own, so switching slices off turns
adapters off rather than rolling one adapter back.
"""

from models.finetune.adapter import AdaptedModel, PrefixCache
from models.finetune.checkpoints import (
    base_model_id,
    checkpoint_ids,
    checkpoint_key,
    destroy_checkpoints,
    initial_checkpoint_id,
    load_checkpoint,
)
from models.finetune.config import FinetuneConfig
from models.finetune.engine import FinetuneEngine
from models.finetune.orders import (
    best_order,
    first_affected,
    order_plan,
    slice_orders,
    switch_off_orders,
    with_orders,
)
from models.finetune.placement import (
    expected_retrain_fraction,
    placement_report,
    retrain_fraction,
)
from models.finetune.records import FinetuneRecord, assign_slice, keys_by_slice, slice_of_subjects
from models.finetune.serving import (
    SERVING_META,
    export_merged,
    load_generator,
    merged_dir,
    merged_model,
)
from models.finetune.training import (
    FinetuneResult,
    TrainedAdapter,
    ensure_initial_checkpoint,
    train_sliced,
    train_sliced_in_memory,
)
from models.finetune.unlearning import (
    FinetuneUnlearning,
    FreshRun,
    SwitchOff,
    compare_with_stored,
    restored_checkpoint,
    switch_off,
    unlearn_subjects,
    verify_bit_exact,
)

__all__ = [
    "SERVING_META",
    "AdaptedModel",
    "FinetuneConfig",
    "FinetuneEngine",
    "FinetuneRecord",
    "FinetuneResult",
    "FinetuneUnlearning",
    "FreshRun",
    "PrefixCache",
    "SwitchOff",
    "TrainedAdapter",
    "assign_slice",
    "base_model_id",
    "best_order",
    "checkpoint_ids",
    "checkpoint_key",
    "compare_with_stored",
    "destroy_checkpoints",
    "ensure_initial_checkpoint",
    "expected_retrain_fraction",
    "export_merged",
    "first_affected",
    "initial_checkpoint_id",
    "keys_by_slice",
    "load_checkpoint",
    "load_generator",
    "merged_dir",
    "merged_model",
    "order_plan",
    "placement_report",
    "restored_checkpoint",
    "retrain_fraction",
    "slice_of_subjects",
    "slice_orders",
    "switch_off",
    "switch_off_orders",
    "train_sliced",
    "train_sliced_in_memory",
    "unlearn_subjects",
    "verify_bit_exact",
    "with_orders",
]
