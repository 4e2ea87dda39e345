"""What every sliced trainer shares: content-addressed slice checkpoints, deterministic torch,
the bit-for-bit comparison, and the slice-retrain engine (train / unlearn / verify) that a SISA
shard (``models.sisa``) and a fine-tune (``models.finetune``) both implement."""

from models.slicing.checkpoints import (
    Checkpoint,
    destroy_checkpoints,
    encode_keys,
    latest_matching,
    prefix_digests,
)
from models.slicing.engine import (
    KeyedRecord,
    SlicedRun,
    SliceRetrain,
    SliceRetrainEngine,
    first_affected_slice,
    retrain_slices,
)
from models.slicing.exactness import ExactnessCheck, compare_states, compare_with_checkpoint

__all__ = [
    "Checkpoint",
    "ExactnessCheck",
    "KeyedRecord",
    "SliceRetrain",
    "SliceRetrainEngine",
    "SlicedRun",
    "compare_states",
    "compare_with_checkpoint",
    "destroy_checkpoints",
    "encode_keys",
    "first_affected_slice",
    "latest_matching",
    "prefix_digests",
    "retrain_slices",
]
