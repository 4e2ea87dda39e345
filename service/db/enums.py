"""Enumerations, stored as plain strings (CHECK constraints, no PG enum types to migrate) and
read back as the enum (``EnumString``), so code compares members, never literals."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Dialect, String
from sqlalchemy.types import TypeDecorator


class RequestStatus(StrEnum):
    received = "received"
    approved = "approved"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    rejected = "rejected"
    cancelled = "cancelled"


class RequestOutcome(StrEnum):
    """How a completed request ended: its subject's data were erased, or no model in scope held
    any (lethe looked and found none; a certificate says where it looked)."""

    erased = "erased"
    no_data_held = "no_data_held"


class NoteKind(StrEnum):
    """A DPO's own words on a request, each stored encrypted beside the event it explains."""

    filing_note = "filing_note"
    identity_reference = "identity_reference"
    approval_note = "approval_note"
    rejection_details = "rejection_details"
    cancellation_reason = "cancellation_reason"
    extension_reason = "extension_reason"


TERMINAL_REQUEST_STATUSES = frozenset(
    {RequestStatus.completed, RequestStatus.failed, RequestStatus.rejected, RequestStatus.cancelled}
)


class ModelKind(StrEnum):
    sharded_classifier = "sharded_classifier"
    generative = "generative"


class ModelStatus(StrEnum):
    registered = "registered"
    training = "training"
    ready = "ready"
    failed = "failed"


class VersionCause(StrEnum):
    training = "training"
    erasure = "erasure"


class Strategy(StrEnum):
    """How an action forgets: slice retraining, or verifier rules (inference-time)."""

    exact_retrain = "exact_retrain"
    verifier_rules = "verifier_rules"


class RuleSetStatus(StrEnum):
    active = "active"
    superseded = "superseded"


class HostPurgeStatus(StrEnum):
    """A host's deletion of its local copies of an erased version: asked, done, or the host was
    silent past the timeout (absent)."""

    pending = "pending"
    confirmed = "confirmed"
    absent = "absent"


class ActionStatus(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    skipped = "skipped"
    failed = "failed"


TERMINAL_ACTION_STATUSES = frozenset({ActionStatus.done, ActionStatus.skipped, ActionStatus.failed})


class JobStatus(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class JobKind(StrEnum):
    train = "train"  # a whole model's first training (no shard)
    retrain_shard = "retrain_shard"  # one shard's slice retraining
    finetune = "finetune"  # a fine-tuned generative model's first (sliced) fine-tune
    finetune_retrain = "finetune_retrain"  # exact removal of subjects from a fine-tune
    plan_sisa = "plan_sisa"  # measure the (S, R) frontier on the model's retained records
    finetune_verify = "finetune_verify"  # a restored fine-tune against training from scratch


class RecordSplit(StrEnum):
    train = "train"
    holdout = "holdout"  # held-out subjects: accuracy and membership evidence, never trained on


class CertificateKind(StrEnum):
    exact_retrain = "exact_retrain"
    conformal_risk = "conformal_risk"
    no_guarantee = "no_guarantee"
    # The model held no record of the subject: where lethe looked, and what it found (none).
    no_data_held = "no_data_held"


class CalibrationKind(StrEnum):
    positive_score = "positive_score"
    negative_score = "negative_score"
    rounds_to_acceptance = "rounds_to_acceptance"


class Role(StrEnum):
    dpo = "dpo"
    ml_engineer = "ml_engineer"
    auditor = "auditor"
    admin = "admin"


def check_in(column: str, values: type[StrEnum]) -> str:
    quoted = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"


E = TypeVar("E", bound=StrEnum)


class EnumString(TypeDecorator[E]):
    """A VARCHAR holding an enum's value; rows come back as members. Alembic compares the
    underlying VARCHAR, so the schema is exactly what the migrations create."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)
