"""One interface for exact unlearning by slice retraining, whatever is trained slice by slice.

A SISA shard (``models.sisa.engine``) and a fine-tune (``models.finetune.engine``) both train
their records slice after slice with a content-addressed checkpoint after each, so both forget
the same way: compute the checkpoint addresses of the retained records, resume from the last
one the served model shares with them (the slice before the first affected one), train the
rest, and name the served checkpoints that saw an erased record. What differs is only how a
slice is trained and checked, which each engine supplies.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from models.artifacts import ArtifactStore
from models.slicing.exactness import ExactnessCheck

__all__ = [
    "KeyedRecord",
    "SliceRetrain",
    "SliceRetrainEngine",
    "SlicedRun",
    "first_affected_slice",
    "retrain_slices",
]

Progress = Callable[[int, int], None]


class KeyedRecord(Protocol):
    """A training record: its key is unique and immutable (checkpoints are addressed by it)."""

    @property
    def key(self) -> str: ...


class SlicedRun(Protocol):
    """What one sliced training reports, whichever engine ran it."""

    @property
    def checkpoint_ids(self) -> list[str]:
        """Index r: the checkpoint after slice r."""

    @property
    def final_checkpoint(self) -> str: ...

    @property
    def resumed_from_slice(self) -> int:
        """The first slice actually trained (the slice count: every checkpoint was stored)."""

    @property
    def slices_trained(self) -> int: ...

    @property
    def lineage_hash(self) -> str: ...

    @property
    def seconds(self) -> float: ...


RecordT = TypeVar("RecordT", bound=KeyedRecord)
RunT = TypeVar("RunT", bound=SlicedRun)


@dataclass(frozen=True)
class SliceRetrain:
    """Which slices an erasure retrained, and from which checkpoint."""

    slices: int
    first_affected_slice: int
    """The first slice whose records changed; equals ``slices`` when none did (nothing to
    retrain)."""
    resumed_from: str | None
    """The stored checkpoint training continued from (None: it started from scratch)."""
    checkpoint_before: str
    """What served before the erasure."""
    checkpoint_after: str
    checkpoint_ids: list[str]
    """Index r: the checkpoint after slice r, trained on the retained records only."""
    slices_retrained: int
    superseded_checkpoints: list[str]
    """The served checkpoints from the first affected slice on that the retrain did not store
    again: they saw an erased record, so the caller destroys them once the new one serves."""
    lineage_hash: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "slices": self.slices,
            "first_affected_slice": self.first_affected_slice,
            "resumed_from": self.resumed_from,
            "checkpoint_before": self.checkpoint_before,
            "checkpoint_after": self.checkpoint_after,
            "slices_retrained": self.slices_retrained,
            "superseded_checkpoints": list(self.superseded_checkpoints),
            "lineage_hash": self.lineage_hash,
            "seconds": self.seconds,
        }


def first_affected_slice(served: Sequence[str], wanted: Sequence[str]) -> int:
    """The first slice whose content address differs between the served checkpoints and the
    retained records' (their count when none does): every earlier checkpoint was trained on
    exactly the retained prefix."""
    return next(
        (i for i, (old, new) in enumerate(zip(served, wanted, strict=True)) if old != new),
        len(served),
    )


def retrain_slices(
    served: Sequence[str], wanted: Sequence[str], train: Callable[[], RunT]
) -> tuple[SliceRetrain, RunT]:
    """Retrain after an erasure: ``served`` are the per-slice checkpoints serving now,
    ``wanted`` the addresses of the retained records' checkpoints, ``train`` trains the
    retained records, resuming from the last stored checkpoint it finds (content addressing
    makes that the one before the first affected slice, or a later one a redelivered run
    stored already)."""
    started = time.perf_counter()
    first = first_affected_slice(served, wanted)
    run = train()
    fresh = set(run.checkpoint_ids)
    resumed = run.resumed_from_slice
    retrain = SliceRetrain(
        slices=len(served),
        first_affected_slice=first,
        resumed_from=run.checkpoint_ids[resumed - 1] if resumed else None,
        checkpoint_before=served[-1],
        checkpoint_after=run.final_checkpoint,
        checkpoint_ids=list(run.checkpoint_ids),
        slices_retrained=run.slices_trained,
        superseded_checkpoints=[c for c in served[first:] if c not in fresh],
        lineage_hash=run.lineage_hash,
        seconds=time.perf_counter() - started,
    )
    return retrain, run


class SliceRetrainEngine(ABC, Generic[RecordT, RunT]):
    """Train, unlearn and verify one sliced model (a SISA shard, a fine-tune in one slice
    order). Engines supply the training and the check; unlearning is the same for all."""

    @property
    @abstractmethod
    def slices(self) -> int: ...

    @abstractmethod
    def checkpoint_ids(self, records: Sequence[RecordT]) -> list[str]:
        """Index r: the address of the checkpoint after slice r of a training on ``records``,
        known without training."""

    @abstractmethod
    def train(
        self, records: Sequence[RecordT], store: ArtifactStore, *, progress: Progress | None = None
    ) -> RunT:
        """Train on ``records`` with a checkpoint after every slice, resuming after the last
        one already stored for exactly these records; ``progress(done, total)`` counts
        slices."""

    @abstractmethod
    def verify(
        self, retained: Sequence[RecordT], checkpoint: str, store: ArtifactStore
    ) -> ExactnessCheck:
        """Train from scratch on ``retained`` (nothing read or written) and compare every
        tensor with the stored ``checkpoint``, bit for bit."""

    def retrain(
        self,
        retained: Sequence[RecordT],
        served: Sequence[str],
        store: ArtifactStore,
        *,
        progress: Progress | None = None,
    ) -> tuple[SliceRetrain, RunT]:
        """Retrain on ``retained`` after an erasure from the model whose per-slice checkpoints
        are ``served``; the retrain and the engine's own training report."""
        if len(served) != self.slices:
            raise ValueError(f"{len(served)} served checkpoints for {self.slices} slices")
        wanted = self.checkpoint_ids(retained)
        return retrain_slices(
            served, wanted, lambda: self.train(retained, store, progress=progress)
        )

    def unlearn(
        self,
        records: Sequence[RecordT],
        erase_keys: Collection[str],
        served: Sequence[str],
        store: ArtifactStore,
        *,
        progress: Progress | None = None,
    ) -> SliceRetrain:
        """Erase the records keyed ``erase_keys`` from the model trained on ``records`` (erased
        ones included) that serves the per-slice checkpoints ``served``."""
        wanted = set(erase_keys)
        retained = [record for record in records if record.key not in wanted]
        return self.retrain(retained, served, store, progress=progress)[0]
