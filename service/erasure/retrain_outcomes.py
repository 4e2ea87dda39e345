"""What an exact retrain did, typed: the contract between the retrain, its publishing, the
action's close and the ``exact_retrain`` certificate.

``ShardRetrainOutcome`` is one shard of a sharded classifier (service.exact.retrain),
``FinetuneRetrainOutcome`` one retrain of a fine-tune (service.finetune.retrain). Each is stored
as its job's result (``to_json``) and read back from it (``from_json``) when the action closes;
the certificate carries the same JSON. The JSON is what reports, the console and auditors read:
its keys and values never change shape silently.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Generic, Self, TypeVar


class ExactnessResult(StrEnum):
    """The bit-exact check: the retrained weights against training from scratch on the retained
    records, tensor by tensor."""

    bit_exact = "bit_exact"
    mismatch = "mismatch"
    not_run = "not_run"  # the model's verify policy skipped it
    pending = "pending"  # runs as its own job; a further certificate records its result

    @classmethod
    def of(cls, bit_exact: bool) -> ExactnessResult:
        return cls.bit_exact if bit_exact else cls.mismatch


@dataclass(frozen=True)
class Exactness:
    """A shard retrain's bit-exact check, under the model's ``verify_exact`` policy."""

    status: ExactnessResult
    policy: str
    """always | sampled | never."""
    tensors_compared: int | None = None
    mismatched_tensors: tuple[str, ...] = ()
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status.value, "policy": self.policy}
        if self.status != ExactnessResult.not_run:
            data["tensors_compared"] = self.tensors_compared
            data["mismatched_tensors"] = list(self.mismatched_tensors)
            data["seconds"] = self.seconds
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            status=ExactnessResult(data["status"]),
            policy=data["policy"],
            tensors_compared=data.get("tensors_compared"),
            mismatched_tensors=tuple(data.get("mismatched_tensors") or ()),
            seconds=data.get("seconds"),
        )


MEMBERSHIP_MEANING = (
    "rank of each erased record's loss among held-out non-members under the new model; small "
    "values would mean it still looks like a training member. Evidence, not the guarantee."
)


@dataclass(frozen=True)
class MembershipEvidence:
    """How much the erased records still look like training members of the retrained model:
    the p-value of each one's loss among held-out non-members'."""

    erased_records: int
    non_members: int
    p_value_min: float
    p_value_median: float
    meaning: str = MEMBERSHIP_MEANING

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "computed",
            "erased_records": self.erased_records,
            "non_members": self.non_members,
            "p_value_min": self.p_value_min,
            "p_value_median": self.p_value_median,
            "meaning": self.meaning,
        }


@dataclass(frozen=True)
class MembershipNotComputed:
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"status": "not_computed", "reason": self.reason}


def _membership_from_json(data: Mapping[str, Any]) -> MembershipEvidence | MembershipNotComputed:
    if data["status"] != "computed":
        return MembershipNotComputed(reason=data["reason"])
    return MembershipEvidence(
        erased_records=data["erased_records"],
        non_members=data["non_members"],
        p_value_min=data["p_value_min"],
        p_value_median=data["p_value_median"],
        meaning=data["meaning"],
    )


@dataclass(frozen=True)
class ShardRetrainOutcome:
    """One shard retrained without the erased rows: the job's result and the certificate's
    entry in ``shards_retrained``."""

    shard: int
    version_before: int
    checkpoint_before: str
    checkpoint_after: str
    first_affected_slice: int
    slices_total: int
    slices_retrained: int
    retained_records: int
    lineage_hash: str
    retrain_seconds: float
    exactness: Exactness
    membership: MembershipEvidence | MembershipNotComputed
    accuracy_before: float | None
    accuracy_after: float | None
    validation_accuracy: float | None
    majority_accuracy: float | None
    epochs_by_slice: tuple[int, ...]
    too_small: str | None
    """Why the retrained shard cannot be shown to have learned anything (None: it did)."""
    public_base: str | None
    superseded_checkpoints: tuple[str, ...]
    """The old checkpoints that saw the erased rows: destroyed once the new version serves."""
    checkpoint_ids: tuple[str, ...] = ()
    """The shard's new checkpoint per slice, for the next version's manifest. Stored there, not
    in the job's result: empty when read back with ``from_json``."""
    version_after: int | None = None
    """The version it was published as (None until published)."""

    def published(self, version_after: int | None) -> Self:
        return replace(self, version_after=version_after)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "shard": self.shard,
            "version_before": self.version_before,
            "checkpoint_before": self.checkpoint_before,
            "checkpoint_after": self.checkpoint_after,
            "first_affected_slice": self.first_affected_slice,
            "slices_total": self.slices_total,
            "slices_retrained": self.slices_retrained,
            "retained_records": self.retained_records,
            "lineage_hash": self.lineage_hash,
            "retrain_seconds": self.retrain_seconds,
            "exactness": self.exactness.to_json(),
            "membership": self.membership.to_json(),
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "validation_accuracy": self.validation_accuracy,
            "majority_accuracy": self.majority_accuracy,
            "epochs_by_slice": list(self.epochs_by_slice),
            "too_small": self.too_small,
            "public_base": self.public_base,
            "superseded_checkpoints": list(self.superseded_checkpoints),
        }
        if self.version_after is not None:
            data["version_after"] = self.version_after
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            shard=data["shard"],
            version_before=data["version_before"],
            checkpoint_before=data["checkpoint_before"],
            checkpoint_after=data["checkpoint_after"],
            first_affected_slice=data["first_affected_slice"],
            slices_total=data["slices_total"],
            slices_retrained=data["slices_retrained"],
            retained_records=data["retained_records"],
            lineage_hash=data["lineage_hash"],
            retrain_seconds=data["retrain_seconds"],
            exactness=Exactness.from_json(data["exactness"]),
            membership=_membership_from_json(data["membership"]),
            accuracy_before=data["accuracy_before"],
            accuracy_after=data["accuracy_after"],
            validation_accuracy=data["validation_accuracy"],
            majority_accuracy=data["majority_accuracy"],
            epochs_by_slice=tuple(data["epochs_by_slice"]),
            too_small=data["too_small"],
            public_base=data["public_base"],
            superseded_checkpoints=tuple(data["superseded_checkpoints"]),
            version_after=data.get("version_after"),
        )


@dataclass(frozen=True)
class FinetuneExactness:
    """A fine-tune retrain's bit-exact check, against fine-tuning from scratch on the retained
    records."""

    status: ExactnessResult
    tensors_compared: int | None = None
    mismatched: tuple[str, ...] = ()
    """The first 20 mismatched tensors."""
    seconds: float | None = None
    full_finetune_seconds: float | None = None
    orders_checked: int | None = None
    """A fine-tune kept in several slice orders: how many were checked (every one restored);
    None for a fine-tune with one order."""

    def to_json(self) -> dict[str, Any]:
        if self.status == ExactnessResult.not_run:
            return {"status": self.status.value}
        data = {
            "status": self.status.value,
            "tensors_compared": self.tensors_compared,
            "mismatched": list(self.mismatched),
            "seconds": self.seconds,
            "full_finetune_seconds": self.full_finetune_seconds,
        }
        if self.orders_checked is not None:
            data["orders_checked"] = self.orders_checked
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            status=ExactnessResult(data["status"]),
            tensors_compared=data.get("tensors_compared"),
            mismatched=tuple(data.get("mismatched") or ()),
            seconds=data.get("seconds"),
            full_finetune_seconds=data.get("full_finetune_seconds"),
            orders_checked=data.get("orders_checked"),
        )


@dataclass(frozen=True)
class OrderOutcome:
    """One slice order (S3T's permutations) of a fine-tune kept in several, after a switch-off
    or a restore. The certificate lists every order; the manifest stores their checkpoints."""

    order: int
    first_affected_slice: int
    """The first training position of this order that held an erased subject."""
    slices_kept: int
    """The slices (adapters, when layered) this order serves: those before its first affected
    position after a switch-off, all of them after a restore."""
    slices_retrained: int
    checkpoint_after: str
    """What this order serves now: its last kept checkpoint (or its initial adapters)."""
    checkpoint_ids: tuple[str, ...] = ()
    """Its checkpoint per kept slice, for the next version's manifest (stored there)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "first_affected_slice": self.first_affected_slice,
            "slices_kept": self.slices_kept,
            "slices_retrained": self.slices_retrained,
            "checkpoint_after": self.checkpoint_after,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(
            order=data["order"],
            first_affected_slice=data["first_affected_slice"],
            slices_kept=data["slices_kept"],
            slices_retrained=data["slices_retrained"],
            checkpoint_after=data["checkpoint_after"],
        )


@dataclass(frozen=True)
class FinetuneRetrainOutcome:
    """A fine-tune retrained without the erased subjects, from the checkpoint before the first
    slice that held them: the job's result, and the certificate's ``slices`` block (a fine-tune
    has no shards)."""

    version_before: int
    first_affected_slice: int
    slices_retrained: int
    slices_total: int
    records_erased: int
    checkpoint_before: str
    checkpoint_after: str
    superseded_checkpoints: tuple[str, ...]
    """The old checkpoints (and the weights merged from them) that saw the erased subjects."""
    lineage_hash: str
    retrain_seconds: float
    export_seconds: float
    exactness: FinetuneExactness
    checkpoint_ids: tuple[str, ...] = ()
    """The new checkpoint per slice, for the next version's manifest (stored there)."""
    retained_keys: tuple[str, ...] = ()
    """The records it trained on: publishing checks none was claimed meanwhile. Not stored."""
    version_after: int | None = None
    """The version it was published as (None until published)."""
    stage: str = "restored"
    """``switched_off``: no training, the stored checkpoint before the first affected slice
    serves (exact by construction; the restore follows); ``restored``: the later slices
    retrained on the retained records."""
    served_weights_sha256: str = ""
    """sha256 of the merged weights that serve ``checkpoint_after``."""
    retained_prefix_sha256: str = ""
    """Switched off: sha256 over the keys of the records the served checkpoint was trained on."""
    orders: tuple[OrderOutcome, ...] = ()
    """A fine-tune kept in several slice orders: each order's state (empty: one order)."""
    served_order: int = 0
    """The order that serves: after a switch-off the one keeping the most slices; the others'
    fields above describe it."""

    def published(self, version_after: int) -> Self:
        return replace(self, version_after=version_after)

    @property
    def switched_off(self) -> bool:
        return self.stage == "switched_off"

    def to_json(self) -> dict[str, Any]:
        """The job's result: the retrain, and the version it was published as."""
        data = self.certificate_json()
        if self.version_after is not None:
            data["version_after"] = self.version_after
        return data

    def certificate_json(self) -> dict[str, Any]:
        """The certificate's ``slices`` block: the retrain (the certificate states the
        versions)."""
        return {
            "version_before": self.version_before,
            "first_affected_slice": self.first_affected_slice,
            "slices_retrained": self.slices_retrained,
            "slices_total": self.slices_total,
            "records_erased": self.records_erased,
            "checkpoint_before": self.checkpoint_before,
            "checkpoint_after": self.checkpoint_after,
            "superseded_checkpoints": list(self.superseded_checkpoints),
            "lineage_hash": self.lineage_hash,
            "retrain_seconds": self.retrain_seconds,
            "export_seconds": self.export_seconds,
            "exactness": self.exactness.to_json(),
            "stage": self.stage,
            "served_weights_sha256": self.served_weights_sha256,
            "retained_prefix_sha256": self.retained_prefix_sha256,
            **self._orders_json(),
        }

    def _orders_json(self) -> dict[str, Any]:
        if not self.orders:
            return {}
        return {
            "served_order": self.served_order,
            "slices_kept": self.orders[self.served_order].slices_kept,
            "orders": [o.to_json() for o in self.orders],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        # Results stored before the fine-tune had its own shape say "slices" for the total
        # (and carry a "shard": 0, ignored).
        total = data["slices_total"] if "slices_total" in data else data["slices"]
        return cls(
            version_before=data["version_before"],
            first_affected_slice=data["first_affected_slice"],
            slices_retrained=data["slices_retrained"],
            slices_total=total,
            records_erased=data["records_erased"],
            checkpoint_before=data["checkpoint_before"],
            checkpoint_after=data["checkpoint_after"],
            superseded_checkpoints=tuple(data["superseded_checkpoints"]),
            lineage_hash=data["lineage_hash"],
            retrain_seconds=data["retrain_seconds"],
            export_seconds=data["export_seconds"],
            exactness=FinetuneExactness.from_json(data["exactness"]),
            version_after=data.get("version_after"),
            stage=data.get("stage", "restored"),
            served_weights_sha256=data.get("served_weights_sha256", ""),
            retained_prefix_sha256=data.get("retained_prefix_sha256", ""),
            orders=tuple(OrderOutcome.from_json(o) for o in data.get("orders") or ()),
            served_order=data.get("served_order", 0),
        )


OutcomeT = TypeVar("OutcomeT", ShardRetrainOutcome, FinetuneRetrainOutcome)


@dataclass(frozen=True)
class PublishedRetrain(Generic[OutcomeT]):
    """A retrain's outcome as published, with its job and model: what destroying what saw the
    subjects and certifying need. A loader returns one for a run that stopped after publishing
    (what is left is those two stages)."""

    job_id: uuid.UUID
    model_id: uuid.UUID
    outcome: OutcomeT
