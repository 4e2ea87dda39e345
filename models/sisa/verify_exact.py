"""Erasing records from a trained SISA ensemble, checked bit for bit against training afresh.

``train_all_shards`` trains every shard of an ensemble into a store; ``erase_and_verify`` erases
records from it (each affected shard retrained once, from its first affected slice) and then
retrains each of those shards from scratch on its retained records, comparing every model and
optimizer tensor with the stored checkpoint. ``lethe verify-exact`` runs both on any CSV
(``service/cli/verify_exact.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from models.artifacts import ArtifactStore
from models.sisa.config import SisaConfig
from models.sisa.exactness import verify_bit_exact
from models.sisa.manifest import Manifest
from models.sisa.records import TrainingRecord
from models.sisa.training import ShardTrainingResult, train_shard
from models.sisa.unlearning import UnlearnResult, unlearn
from models.slicing.exactness import ExactnessCheck

__all__ = [
    "ExactErasureOutcome",
    "TrainedEnsemble",
    "erase_and_verify",
    "train_all_shards",
]

# (done, total): shards trained so far.
Progress = Callable[[int, int], None]
# (stage, done, total); stages "unlearn" then "verify".
StageProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainedEnsemble:
    manifest: Manifest
    shards: list[ShardTrainingResult]
    """In shard order."""

    @property
    def shards_too_small(self) -> dict[int, str]:
        """Shard → why it cannot be shown to have learned anything (only such shards)."""
        return {r.shard: r.too_small for r in self.shards if r.too_small}


@dataclass(frozen=True)
class ExactErasureOutcome:
    unlearning: UnlearnResult
    checks: dict[int, ExactnessCheck]
    """One per retrained shard, in shard order."""

    @property
    def bit_exact(self) -> bool:
        """Every retrained shard is what training from scratch gives (and one was retrained)."""
        return bool(self.checks) and all(check.bit_exact for check in self.checks.values())


def train_all_shards(
    config: SisaConfig,
    shard_records: Mapping[int, Sequence[TrainingRecord]],
    store: ArtifactStore,
    *,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> TrainedEnsemble:
    """Train shards ``0..S-1`` (a shard missing from ``shard_records`` trains on no records);
    ``use_cache`` as in ``train_shard``."""
    results = []
    for shard in range(config.shards):
        if progress is not None:
            progress(shard, config.shards)
        results.append(
            train_shard(config, shard, shard_records.get(shard, []), store, use_cache=use_cache)
        )
    if progress is not None:
        progress(config.shards, config.shards)
    return TrainedEnsemble(Manifest.from_results(results), results)


def erase_and_verify(
    config: SisaConfig,
    shard_records: Mapping[int, Sequence[TrainingRecord]],
    erase_keys: Collection[str],
    store: ArtifactStore,
    manifest: Manifest,
    *,
    progress: StageProgress | None = None,
) -> ExactErasureOutcome:
    """``unlearn`` the ``erase_keys`` from the ensemble ``manifest`` serves (trained on
    ``shard_records``), then ``verify_bit_exact`` every shard it retrained."""
    if progress is not None:
        progress("unlearn", 0, 1)
    result = unlearn(config, shard_records, erase_keys, store, manifest)
    if progress is not None:
        progress("unlearn", 1, 1)
    return ExactErasureOutcome(result, _verify_retrained(config, result, store, progress))


def _verify_retrained(
    config: SisaConfig,
    result: UnlearnResult,
    store: ArtifactStore,
    progress: StageProgress | None,
) -> dict[int, ExactnessCheck]:
    checks = {}
    for done, (shard, outcome) in enumerate(sorted(result.shards.items())):
        if progress is not None:
            progress("verify", done, len(result.shards))
        checks[shard] = verify_bit_exact(
            config, shard, result.retained_records[shard], outcome.checkpoint_after, store
        )
    if progress is not None:
        progress("verify", len(result.shards), len(result.shards))
    return checks
