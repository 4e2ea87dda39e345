"""Enumerations stored as plain strings (CHECK constraints, no PG enum types to migrate)."""

from __future__ import annotations

from enum import StrEnum


class RequestStatus(StrEnum):
    received = "received"
    approved = "approved"
    in_progress = "in_progress"
    completed = "completed"
    failed = "failed"
    rejected = "rejected"
    cancelled = "cancelled"


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


class Strategy(StrEnum):
    exact_retrain = "exact_retrain"
    verifier_rules = "verifier_rules"


class RuleSetStatus(StrEnum):
    active = "active"
    superseded = "superseded"


class ActionStatus(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    skipped = "skipped"
    failed = "failed"


class JobStatus(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class JobKind(StrEnum):
    train = "train"
    retrain_shard = "retrain_shard"


class Role(StrEnum):
    dpo = "dpo"
    ml_engineer = "ml_engineer"
    auditor = "auditor"
    admin = "admin"


def check_in(column: str, values: type[StrEnum]) -> str:
    quoted = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"
