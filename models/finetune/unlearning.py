"""Erasing subjects from a sliced fine-tune, and the bit-for-bit check of the result."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.artifacts import ArtifactStore
from models.finetune.adapter import PrefixCache
from models.finetune.checkpoints import (
    base_model_id,
    checkpoint_ids,
    initial_checkpoint_id,
    load_checkpoint,
)
from models.finetune.config import FinetuneConfig
from models.finetune.records import FinetuneRecord, keys_by_slice, slice_of_subjects
from models.finetune.training import (
    FinetuneResult,
    Progress,
    TrainedAdapter,
    train_sliced,
    train_sliced_in_memory,
)
from models.slicing.checkpoints import encode_keys
from models.slicing.engine import retrain_slices
from models.slicing.exactness import ExactnessCheck, compare_with_checkpoint

__all__ = [
    "FinetuneUnlearning",
    "FreshRun",
    "SwitchOff",
    "compare_with_stored",
    "restored_checkpoint",
    "switch_off",
    "unlearn_subjects",
    "verify_bit_exact",
]


@dataclass(frozen=True)
class FinetuneUnlearning:
    erased_subjects: list[str]
    subjects_not_found: list[str]
    """Requested subjects no record belongs to (e.g. erased by an earlier run)."""
    erased_records: int
    first_affected_slice: int
    """Equals the slice count when nothing was erased (no retraining)."""
    slices_retrained: int
    checkpoint_before: str
    checkpoint_after: str
    checkpoints_after: list[str]
    superseded_checkpoints: list[str]
    """Old checkpoints from the first affected slice on: they were trained on erased records,
    so the caller destroys them (and any weights merged from them) once serving has switched."""
    retained_records: list[FinetuneRecord]
    training: FinetuneResult
    seconds: float

    @property
    def lineage_hash(self) -> str:
        return self.training.lineage_hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "erased_subjects": len(self.erased_subjects),
            "subjects_not_found": len(self.subjects_not_found),
            "erased_records": self.erased_records,
            "first_affected_slice": self.first_affected_slice,
            "slices_retrained": self.slices_retrained,
            "checkpoint_before": self.checkpoint_before,
            "checkpoint_after": self.checkpoint_after,
            "superseded_checkpoints": list(self.superseded_checkpoints),
            "lineage_hash": self.lineage_hash,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class SwitchOff:
    """An erasure served at once: the checkpoint before the first slice that held an erased
    subject. Nothing is trained; the checkpoint was stored by the first fine-tune.

    Exact by construction: the checkpoint after slice j - 1 is a function of slices 0..j - 1
    alone (records, order, seeds), none of which held an erased subject, so it is the model a
    fine-tune of the retained records of those slices gives. A layered fine-tune's later
    adapters are at their zero-effect start in it; a cumulative one's simply saw fewer records.
    """

    erased_subjects: list[str]
    subjects_not_found: list[str]
    erased_records: int
    first_affected_slice: int
    """Slices from here on are switched off; equals the slice count when nothing was erased."""
    checkpoint_before: str
    checkpoint_served: str
    """What serving switches to: the checkpoint after slice first_affected_slice - 1 (or an
    earlier one already served), or the initial (untrained) adapters when the first slice is
    affected."""
    checkpoints_served: list[str]
    """The checkpoints of the slices still served (those before ``checkpoint_served`` and it)."""
    retained_prefix_keys: list[str]
    """The record keys the served checkpoint was trained on (slices before the first affected
    one, in training order)."""
    superseded_checkpoints: list[str]
    """The served fine-tune's checkpoints from the first affected slice on: they saw an erased
    subject, so nothing may serve or resume from them any more."""

    @property
    def retained_prefix_hash(self) -> str:
        return hashlib.sha256(encode_keys(self.retained_prefix_keys)).hexdigest()

    @property
    def slices_switched_off(self) -> int:
        return len(self.superseded_checkpoints)


def _served_prefix(served: str, ids: Sequence[str], initial: str) -> int:
    """How many slices the served checkpoint was trained on: the full fine-tune, or one an
    earlier erasure switched off and whose restore has not been published yet."""
    if served == initial:
        return 0
    if served not in ids:
        raise ValueError("the served checkpoint was not trained on the given records")
    return list(ids).index(served) + 1


def switch_off(
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    erase_subjects: Collection[str],
    served_checkpoint: str,
    base_id: str,
) -> SwitchOff:
    """Which stored checkpoint serves the fine-tune without ``erase_subjects``, at once.

    ``records`` are the records the fine-tune was trained on (erased ones included);
    ``served_checkpoint`` is the checkpoint after one of its slices (the last, or an earlier one
    a previous erasure switched to) or the initial adapters.
    """
    by_slice = keys_by_slice(config, records)
    old_ids = checkpoint_ids(base_id, config, by_slice)
    initial = initial_checkpoint_id(base_id, config)
    served_prefix = _served_prefix(served_checkpoint, old_ids, initial)
    wanted = set(erase_subjects)
    slices = slice_of_subjects(config, records)
    found = sorted(s for s in wanted if s in slices)
    first = min((slices[s] for s in found), default=config.slices)
    keep = min(first, served_prefix)
    return SwitchOff(
        erased_subjects=found,
        subjects_not_found=sorted(wanted - set(found)),
        erased_records=sum(1 for r in records if r.subject in wanted),
        first_affected_slice=first,
        checkpoint_before=served_checkpoint,
        checkpoint_served=old_ids[keep - 1] if keep else initial,
        checkpoints_served=old_ids[:keep],
        retained_prefix_keys=[key for keys in by_slice[:keep] for key in keys],
        superseded_checkpoints=old_ids[first:],
    )


def unlearn_subjects(
    base_dir: str | Path,
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    erase_subjects: Collection[str],
    store: ArtifactStore,
    served_checkpoint: str,
    *,
    base_id: str | None = None,
    prefix_cache: PrefixCache | None = None,
    progress: Progress | None = None,
) -> FinetuneUnlearning:
    """Erase every record of ``erase_subjects`` from the fine-tune serving ``served_checkpoint``.

    ``records`` are the records that checkpoint was trained on (erased ones included). The
    retrain resumes from the checkpoint before the first slice that held any erased subject
    (found by content address) and trains the later slices on the retained records only, so
    the result equals fine-tuning from scratch on the retained records, bit for bit.
    """
    started = time.perf_counter()
    base = base_id if base_id is not None else base_model_id(base_dir)
    old_ids = checkpoint_ids(base, config, keys_by_slice(config, records))
    if old_ids[-1] != served_checkpoint:
        # Superseded checkpoints are derived from these records; if they are not the ones the
        # served checkpoint was trained on, destroying "superseded" ones would be a guess.
        raise ValueError("the served checkpoint was not trained on the given records")
    wanted = set(erase_subjects)
    slices = slice_of_subjects(config, records)
    found = sorted(s for s in wanted if s in slices)
    retained = [r for r in records if r.subject not in wanted]
    retrain, training = retrain_slices(
        old_ids,
        checkpoint_ids(base, config, keys_by_slice(config, retained)),
        lambda: train_sliced(
            base_dir,
            config,
            retained,
            store,
            base_id=base,
            prefix_cache=prefix_cache,
            progress=progress,
        ),
    )
    return FinetuneUnlearning(
        erased_subjects=found,
        subjects_not_found=sorted(wanted - set(found)),
        erased_records=len(records) - len(retained),
        first_affected_slice=retrain.first_affected_slice,
        slices_retrained=retrain.slices_retrained,
        checkpoint_before=served_checkpoint,
        checkpoint_after=retrain.checkpoint_after,
        checkpoints_after=retrain.checkpoint_ids,
        superseded_checkpoints=retrain.superseded_checkpoints,
        retained_records=retained,
        training=training,
        seconds=time.perf_counter() - started,
    )


def restored_checkpoint(
    config: FinetuneConfig,
    records: Sequence[FinetuneRecord],
    erase_subjects: Collection[str],
    base_id: str,
) -> tuple[str, list[FinetuneRecord]]:
    """The checkpoint a restore without ``erase_subjects`` stores last, and the records it
    trains on, known before it trains: checkpoints are addressed by their records, so the
    from-scratch check can start while the restore is still running."""
    wanted = set(erase_subjects)
    retained = [r for r in records if r.subject not in wanted]
    ids = checkpoint_ids(base_id, config, keys_by_slice(config, retained))
    return ids[-1], retained


@dataclass(frozen=True)
class FreshRun:
    """A from-scratch fine-tune's result and final tensors, without its model: a check of
    several slice orders keeps one per order while it waits for the restore."""

    result: FinetuneResult
    adapter_state: dict[str, Any]
    optimizer_state: dict[str, Any]

    @classmethod
    def of(cls, fresh: TrainedAdapter) -> FreshRun:
        return cls(fresh.result, fresh.model.adapter_state(), fresh.optimizer.state_dict())


def compare_with_stored(
    fresh: TrainedAdapter | FreshRun, checkpoint: str, store: ArtifactStore, started: float
) -> ExactnessCheck:
    """Every adapter and optimizer tensor of the from-scratch run ``fresh`` against the stored
    ``checkpoint``, and that ``checkpoint`` is the content address of the same records."""
    run = fresh if isinstance(fresh, FreshRun) else FreshRun.of(fresh)
    return compare_with_checkpoint(
        load_checkpoint(store, checkpoint),
        checkpoint,
        run.result.final_checkpoint,
        run.adapter_state,
        run.optimizer_state,
        model_label="adapter",
        started=started,
    )


def verify_bit_exact(
    base_dir: str | Path,
    config: FinetuneConfig,
    retained_records: Sequence[FinetuneRecord],
    checkpoint: str,
    store: ArtifactStore,
    *,
    base_id: str | None = None,
) -> tuple[ExactnessCheck, TrainedAdapter]:
    """Fine-tune from scratch on ``retained_records`` (fresh activation cache, nothing read or
    written) and compare every adapter and optimizer tensor with the stored ``checkpoint``.

    Also checks that ``checkpoint`` is the content address of exactly these records. Returns
    the check and the from-scratch run (the model a fine-tune without the erased subjects
    gives; its ``result.seconds`` is the cost of a full fine-tune).
    """
    started = time.perf_counter()
    load_checkpoint(store, checkpoint)  # fail before a whole fine-tune when it is missing
    fresh = train_sliced_in_memory(base_dir, config, retained_records, base_id=base_id)
    return compare_with_stored(fresh, checkpoint, store, started), fresh
