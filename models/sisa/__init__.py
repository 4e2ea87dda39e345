"""Exact unlearning by SISA slice retraining (Bourtoule et al., IEEE S&P 2021).

Records are placed in shards by subject and in slices by record key; each shard model trains
slice by slice with a content-addressed checkpoint after every slice, so erasing records
retrains one shard from the checkpoint before the first slice that held them, and the result is
checkable bit for bit against training from scratch on the retained records.
"""

from models.sisa.baseline import SingleModel, single_model_baseline
from models.sisa.checkpoints import checkpoint_id, checkpoint_key, load_checkpoint
from models.sisa.classifier import Classifier
from models.sisa.config import DEFAULT_SLICES, SisaConfig, default_shards
from models.sisa.engine import ShardEngine
from models.sisa.ensemble import Ensemble, Weighting
from models.sisa.exactness import verify_bit_exact
from models.sisa.manifest import Manifest, VersionManifest
from models.sisa.membership import membership_p_values
from models.sisa.partition import assign_shard, assign_slice, is_validation_record
from models.sisa.placement import PlacementReport, compare_placement, expected_retrain_fraction
from models.sisa.planning import FrontierPoint, SisaPlan, SubjectRecord, plan_sisa
from models.sisa.public_base import PublicBase
from models.sisa.records import TrainingRecord
from models.sisa.training import ShardTrainingResult, train_shard
from models.sisa.unlearning import ShardUnlearning, UnlearnResult, unlearn, unlearn_shard
from models.slicing import Checkpoint, ExactnessCheck

__all__ = [
    "DEFAULT_SLICES",
    "Checkpoint",
    "Classifier",
    "Ensemble",
    "ExactnessCheck",
    "FrontierPoint",
    "Manifest",
    "PlacementReport",
    "PublicBase",
    "ShardEngine",
    "ShardTrainingResult",
    "ShardUnlearning",
    "SingleModel",
    "SisaConfig",
    "SisaPlan",
    "SubjectRecord",
    "TrainingRecord",
    "UnlearnResult",
    "VersionManifest",
    "Weighting",
    "assign_shard",
    "assign_slice",
    "checkpoint_id",
    "checkpoint_key",
    "compare_placement",
    "default_shards",
    "expected_retrain_fraction",
    "is_validation_record",
    "load_checkpoint",
    "membership_p_values",
    "plan_sisa",
    "single_model_baseline",
    "train_shard",
    "unlearn",
    "unlearn_shard",
    "verify_bit_exact",
]
