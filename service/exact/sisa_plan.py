"""Choosing (S, R) per model: a job that measures the accuracy/speed-up frontier on a
deterministic subsample of the model's retained training records (``models.sisa.plan_sisa``).

request (API/CLI, one transaction) → load (claim; retained rows only: a row any erasure request
has claimed is never read) → compute (no transaction open) → record (the frontier and the
proposal on the model; with ``auto``, the chosen (S, R) applied if the model has not trained).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models.sisa import SisaConfig, SisaPlan, SubjectRecord, assign_shard, assign_slice, plan_sisa
from models.sisa.planning import DEFAULT_CANDIDATES
from service.audit import append_event
from service.core.config import Settings, get_settings
from service.core.errors import conflict
from service.core.skip import Skip
from service.core.subject_keys import PayloadReader
from service.db.base import utcnow
from service.db.enums import JobKind, JobStatus, ModelKind, ModelStatus, RecordSplit
from service.db.tables import Job, MlModel, TrainingRecord
from service.exact.placement import placement_report
from service.exact.snapshot import feature_spec, public_base, sisa_config, to_training_records
from service.jobs import lifecycle as jobs
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_PLAN_SISA
from service.registry.config import ModelConfig


@dataclass(frozen=True)
class PlanOptions:
    budget_points: float = 1.0
    se_margin: float = 0.0
    erasure_rate: float = 0.001
    auto: bool = False
    max_records: int = 20_000
    candidates: tuple[tuple[int, int], ...] = DEFAULT_CANDIDATES

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidates"] = [list(c) for c in self.candidates]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanOptions:
        return cls(
            budget_points=float(data["budget_points"]),
            se_margin=float(data.get("se_margin", 0.0)),
            erasure_rate=float(data["erasure_rate"]),
            auto=bool(data["auto"]),
            max_records=int(data["max_records"]),
            candidates=tuple((int(s), int(r)) for s, r in data["candidates"]),
        )


def request_plan(
    session: Session, settings: Settings, model: MlModel, options: PlanOptions, actor: str
) -> Job:
    """Open a plan job for the (locked) model and send it after commit."""
    if model.kind != ModelKind.sharded_classifier:
        raise conflict(
            "wrong_model_kind",
            "only sharded classifiers have a plan job; a fine-tune's slice-order trade-off "
            "needs none: read it with GET /v1/models/{name}/plan (lethe models plan NAME)",
        )
    if ModelConfig.model_validate(model.config).sisa_config is None:
        raise conflict("no_training_records", "ingest training records before planning")
    busy = session.scalar(
        select(Job.id).where(
            Job.model_id == model.id,
            Job.kind == JobKind.plan_sisa,
            Job.status.in_([JobStatus.pending, JobStatus.running]),
        )
    )
    if busy is not None:
        raise conflict("plan_in_progress", "a plan job for this model has not finished yet")
    job = Job(
        id=uuid.uuid4(),
        kind=JobKind.plan_sisa,
        model_id=model.id,
        shard=None,
        status=JobStatus.pending,
        result={"options": options.to_dict()},
    )
    session.add(job)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="model.plan_requested",
        target_type="model",
        target_id=str(model.id),
        details={"model": model.name, "job_id": str(job.id), "options": options.to_dict()},
    )
    enqueue_after_commit(session, settings, TASK_PLAN_SISA, [str(job.id)])
    return job


@dataclass(frozen=True)
class PlanInputs:
    job_id: uuid.UUID
    model_id: uuid.UUID
    config: SisaConfig
    options: PlanOptions
    flagged_erasure_odds: float
    records: list[SubjectRecord]


def load_plan(session: Session, job_id: uuid.UUID) -> PlanInputs | Skip:
    """Claim the job and read the retained train records (``Skip.not_claimed``: not ours to
    run)."""
    job = jobs.claim(session, job_id)
    if job is None:
        return Skip.not_claimed
    model = session.get_one(MlModel, job.model_id)
    config = ModelConfig.model_validate(model.config)
    rows = session.execute(
        select(
            TrainingRecord.record_key,
            TrainingRecord.subject_ref,
            TrainingRecord.likely_erased,
            TrainingRecord.payload,
            TrainingRecord.label,
        )
        .where(
            TrainingRecord.model_id == model.id,
            TrainingRecord.split == RecordSplit.train,
            # Claimed by an erasure request (pending or purged): never read.
            TrainingRecord.erasure_request_id.is_(None),
            TrainingRecord.payload.is_not(None),
        )
        .order_by(TrainingRecord.record_key)
    ).all()
    reader = PayloadReader(get_settings())
    kept = [
        (key, ref, flag, reader.open(payload), label)
        for key, ref, flag, payload, label in rows
        if payload is not None and label is not None
    ]
    featurized = to_training_records(
        feature_spec(model.config),
        [(key, 0, payload, label) for key, _, _, payload, label in kept],
        public_base(model.config),
    )
    records = [
        SubjectRecord(ref, r.key, r.x, r.y, likely_erased=flag)
        for r, (_, ref, flag, _, _) in zip(featurized, kept, strict=True)
    ]
    return PlanInputs(
        job_id=job_id,
        model_id=model.id,
        config=sisa_config(model.config),
        options=PlanOptions.from_dict(job.result["options"]),
        flagged_erasure_odds=config.placement.flagged_erasure_odds if config.placement else 1.0,
        records=records,
    )


def compute_plan(inputs: PlanInputs, progress: Callable[[float], None]) -> SisaPlan:
    """The frontier and the proposal (no transaction open). Candidates whose R cannot hold
    the model's tail slices are left out."""
    tail = inputs.config.tail_slices
    candidates = [(s, r) for s, r in inputs.options.candidates if r > tail]
    if not candidates:
        raise ValueError("no candidate (S, R) has more slices than the placement's tail")
    return plan_sisa(
        inputs.config,
        inputs.records,
        candidates=candidates,
        budget_points=inputs.options.budget_points,
        se_margin=inputs.options.se_margin,
        erasure_rate=inputs.options.erasure_rate,
        flagged_erasure_odds=inputs.flagged_erasure_odds,
        max_records=inputs.options.max_records,
        progress=lambda _stage, done, total: progress(done / total if total else 1.0),
    )


def record_plan(session: Session, inputs: PlanInputs, plan: SisaPlan, actor: str) -> Skip | None:
    """Store the frontier and the proposal on the model (and apply it with ``auto`` if the
    model has not trained yet); ``Skip.reaped`` when the reaper took the job back."""
    model = session.get_one(MlModel, inputs.model_id, with_for_update=True)
    job = jobs.running_job(session, inputs.job_id)
    if job is None:
        return Skip.reaped
    chosen = (plan.chosen.shards, plan.chosen.slices)
    applied, reason = False, None
    current = sisa_config(model.config)
    if not inputs.options.auto:
        reason = "proposal only (auto is off)"
    elif model.status != ModelStatus.registered:
        reason = "the model has trained already: (S, R) can change only before the first training"
    elif chosen == (current.shards, current.slices):
        reason = "the model already has the chosen (S, R)"
    else:
        _apply(session, model, plan)
        applied = True
    stored = {
        **_finite(plan.to_dict()),
        "job_id": str(job.id),
        "options": inputs.options.to_dict(),
        "applied": applied,
        "not_applied_because": reason,
        "computed_at": utcnow().isoformat(),
    }
    config = ModelConfig.model_validate(model.config)
    model.config = config.model_copy(update={"sisa_plan": stored}).model_dump(mode="json")
    jobs.finish(session, job, stored)
    append_event(
        session,
        actor=actor,
        action="model.planned",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "job_id": str(job.id),
            "chosen": {"shards": chosen[0], "slices": chosen[1]},
            "within_budget": plan.within_budget,
            "applied": applied,
        },
    )
    return None


def _finite(value: Any) -> Any:
    """JSON without Infinity/NaN (PostgreSQL's JSONB has neither): None in their place."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _apply(session: Session, model: MlModel, plan: SisaPlan) -> None:
    """Switch the model to the chosen (S, R): the config, and every record's shard and slice
    (a function of its subject, key and placement flag alone)."""
    config = ModelConfig.model_validate(model.config)
    sisa = plan.config(sisa_config(model.config))
    rows = session.execute(
        select(
            TrainingRecord.id,
            TrainingRecord.subject_ref,
            TrainingRecord.record_key,
            TrainingRecord.likely_erased,
            TrainingRecord.split,
        ).where(TrainingRecord.model_id == model.id)
    ).all()
    placed = [
        {
            "id": row_id,
            "shard": assign_shard(ref, sisa),
            "slice": assign_slice(key, sisa, likely_erased=flag),
        }
        for row_id, ref, key, flag, _ in rows
    ]
    if placed:
        session.execute(update(TrainingRecord), placed)
    report = config.placement_report
    if config.placement is not None:
        report = placement_report(
            sisa,
            config.placement,
            [(key, flag) for _, _, key, flag, split in rows if split == RecordSplit.train],
        )
    sisa_settings = config.sisa.model_copy(update={"shards": sisa.shards, "slices": sisa.slices})
    model.config = config.model_copy(
        update={"sisa": sisa_settings, "sisa_config": sisa.to_dict(), "placement_report": report}
    ).model_dump(mode="json")
    session.flush()
