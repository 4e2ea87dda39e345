"""Erasing records from a SISA ensemble: retrain each affected shard once, from its first
affected slice, and report which checkpoints the erased records can still be found in."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.artifacts import ArtifactStore
from models.sisa.checkpoints import checkpoint_ids
from models.sisa.config import SisaConfig
from models.sisa.manifest import Manifest
from models.sisa.records import TrainingRecord, keys_by_slice
from models.sisa.training import ShardTrainingResult, train_shard
from models.slicing.engine import retrain_slices

__all__ = ["ShardUnlearning", "UnlearnResult", "unlearn", "unlearn_shard"]


@dataclass(frozen=True)
class ShardUnlearning:
    shard: int
    erased_keys: list[str]
    first_affected_slice: int
    checkpoint_before: str
    checkpoint_after: str
    slices_retrained: int
    superseded_checkpoints: list[str]
    """Old checkpoints from the first affected slice on: they were trained on erased records,
    so the caller deletes them once the new manifest is in service."""
    training: ShardTrainingResult

    @property
    def lineage_hash(self) -> str:
        return self.training.lineage_hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "erased_records": len(self.erased_keys),
            "first_affected_slice": self.first_affected_slice,
            "checkpoint_before": self.checkpoint_before,
            "checkpoint_after": self.checkpoint_after,
            "slices_retrained": self.slices_retrained,
            "resumed_from_slice": self.training.resumed_from_slice,
            "superseded_checkpoints": list(self.superseded_checkpoints),
            "lineage_hash": self.training.lineage_hash,
            "seconds": self.training.seconds,
        }


@dataclass(frozen=True)
class UnlearnResult:
    shards: dict[int, ShardUnlearning]
    """Only the shards that held at least one erased record."""
    manifest: Manifest
    retained_records: dict[int, list[TrainingRecord]]
    """The records each retrained shard now stands for (input for ``verify_bit_exact``)."""
    keys_not_found: list[str]
    """Requested keys held by no shard, e.g. because an earlier run already erased them."""
    seconds: float

    @property
    def superseded_checkpoints(self) -> list[str]:
        return [c for shard in self.shards.values() for c in shard.superseded_checkpoints]


def unlearn(
    config: SisaConfig,
    shard_records: Mapping[int, Sequence[TrainingRecord]],
    erase_keys: Collection[str],
    store: ArtifactStore,
    manifest: Manifest,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> UnlearnResult:
    """Erase ``erase_keys`` from the ensemble described by ``manifest``.

    ``shard_records`` are the records the manifest was trained on (erased ones included). Keys
    are grouped by shard and every affected shard is retrained once however many of its keys
    are erased, resuming from the checkpoint before its first affected slice (found through
    content addressing, see ``train_shard``). The result is exactly the ensemble that training
    on the retained records would give. ``progress(done, total)`` counts retrained shards.
    """
    started = time.perf_counter()
    wanted = set(erase_keys)
    erased_by_shard = _erased_by_shard(shard_records, wanted)
    affected = sorted(erased_by_shard)
    outcomes: dict[int, ShardUnlearning] = {}
    retained_by_shard: dict[int, list[TrainingRecord]] = {}
    for done, shard in enumerate(affected):
        if progress is not None:
            progress(done, len(affected))
        records = shard_records[shard]
        old_ids = _served_checkpoint_ids(config, shard, records, manifest)
        retained = [record for record in records if record.key not in wanted]
        outcomes[shard] = unlearn_shard(
            config,
            shard,
            retained,
            [record.key for record in erased_by_shard[shard]],
            old_ids,
            store,
        )
        retained_by_shard[shard] = retained
    if progress is not None:
        progress(len(affected), len(affected))
    found = {record.key for records in erased_by_shard.values() for record in records}
    return UnlearnResult(
        shards=outcomes,
        manifest=manifest.replace({s: outcome.checkpoint_after for s, outcome in outcomes.items()}),
        retained_records=retained_by_shard,
        keys_not_found=sorted(wanted - found),
        seconds=time.perf_counter() - started,
    )


def _erased_by_shard(
    shard_records: Mapping[int, Sequence[TrainingRecord]], wanted: set[str]
) -> dict[int, list[TrainingRecord]]:
    """Shard → its records whose key is in ``wanted`` (only shards holding one)."""
    erased: dict[int, list[TrainingRecord]] = {}
    for shard, records in shard_records.items():
        for record in records:
            if record.key in wanted:
                erased.setdefault(shard, []).append(record)
    return erased


def _served_checkpoint_ids(
    config: SisaConfig, shard: int, records: Sequence[TrainingRecord], manifest: Manifest
) -> list[str]:
    """The per-slice checkpoint ids of ``shard`` trained on ``records``, checked to end in the
    checkpoint ``manifest`` serves."""
    old_ids = checkpoint_ids(config, shard, keys_by_slice(config, records))
    if shard not in manifest:
        raise ValueError(f"shard {shard} has no entry in the manifest")
    if manifest[shard] != old_ids[-1]:
        # Superseded checkpoints are derived from these records; if they are not the ones
        # the served checkpoint was trained on, deleting "superseded" ones would be a guess.
        raise ValueError(f"manifest entry of shard {shard} was not trained on the given records")
    return old_ids


def unlearn_shard(
    config: SisaConfig,
    shard: int,
    retained: Sequence[TrainingRecord],
    erased_keys: Collection[str],
    served_checkpoint_ids: Sequence[str],
    store: ArtifactStore,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ShardUnlearning:
    """Retrain one shard on ``retained`` from the checkpoint before its first affected slice.

    ``served_checkpoint_ids`` are the per-slice checkpoints of the shard as it serves now. The
    first affected slice is the first whose content address differs between the served
    checkpoints and the retained records': every earlier checkpoint was trained on exactly the
    retained prefix and is reused (``train_shard`` finds it in the store). The served
    checkpoints from that slice on saw erased records, so they are reported as superseded for
    the caller to destroy once the new checkpoint serves. If the served shard already excludes
    every erased record (an earlier retrain did it), nothing differs and nothing is trained.
    ``progress(done, total)`` counts slices.
    """
    if len(served_checkpoint_ids) != config.slices:
        raise ValueError(
            f"shard {shard}: {len(served_checkpoint_ids)} served checkpoints for "
            f"{config.slices} slices"
        )
    retrain, training = retrain_slices(
        served_checkpoint_ids,
        checkpoint_ids(config, shard, keys_by_slice(config, retained)),
        lambda: train_shard(config, shard, retained, store, progress=progress),
    )
    return ShardUnlearning(
        shard=shard,
        erased_keys=sorted(erased_keys),
        first_affected_slice=retrain.first_affected_slice,
        checkpoint_before=retrain.checkpoint_before,
        checkpoint_after=retrain.checkpoint_after,
        slices_retrained=retrain.slices_retrained,
        superseded_checkpoints=retrain.superseded_checkpoints,
        training=training,
    )
