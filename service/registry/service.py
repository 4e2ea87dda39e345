"""Registering models, starting training, reading versions. Services flush; callers commit."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.errors import conflict, invalid, not_found
from service.db.enums import JobKind, JobStatus, ModelKind, ModelStatus, VersionCause
from service.db.tables import Job, MlModel, ModelVersion
from service.jobs import lifecycle as jobs
from service.queue.after_commit import enqueue_after_commit
from service.queue.names import TASK_TRAIN_MODEL
from service.registry.config import (
    GenerativeConfig,
    GenerativePolicy,
    ModelConfig,
    ModelPolicy,
)


def validate_registration(
    kind: str, config: dict[str, Any], policy: dict[str, Any]
) -> tuple[BaseModel, BaseModel]:
    """The kind's own schemas; raises pydantic.ValidationError (rendered as a 422)."""
    if kind == ModelKind.generative:
        generative = GenerativeConfig.model_validate(config)
        if not (Path(generative.model_dir) / "config.json").is_file():
            raise invalid("model_dir_not_found", "model_dir is not a local Hugging Face model")
        generative_policy = GenerativePolicy.model_validate(policy)
        if generative_policy.strategy == "both" and generative.finetune is None:
            raise invalid("both_needs_finetune", "policy 'both' needs a model lethe fine-tunes")
        return generative, generative_policy
    return ModelConfig.model_validate(config), ModelPolicy.model_validate(policy)


def register_model(
    session: Session,
    name: str,
    kind: str,
    config: BaseModel,
    policy: BaseModel,
    actor: str,
) -> MlModel:
    if session.scalar(select(MlModel.id).where(MlModel.name == name)) is not None:
        raise conflict("model_exists", "a model with this name is already registered")
    model = MlModel(
        id=uuid.uuid4(),
        name=name,
        kind=ModelKind(kind),
        # A generative model is served as it is (nothing to train before it is ready) unless
        # lethe fine-tunes it.
        status=(
            ModelStatus.ready
            if kind == ModelKind.generative and config.model_dump().get("finetune") is None
            else ModelStatus.registered
        ),
        config=config.model_dump(mode="json"),
        policy=policy.model_dump(mode="json"),
        created_by=actor,
    )
    session.add(model)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="model.registered",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": name,
            "kind": model.kind,
            "sisa": model.config.get("sisa"),
            "policy": model.policy,
        },
    )
    return model


def get_model(session: Session, name: str, *, lock: bool = False) -> MlModel:
    stmt = select(MlModel).where(MlModel.name == name)
    if lock:
        stmt = stmt.with_for_update()
    model = session.scalar(stmt)
    if model is None:
        raise not_found("model_not_found", "no model with this name")
    return model


def current_version(session: Session, model: MlModel) -> ModelVersion | None:
    if model.current_version is None:
        return None
    return session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.number == model.current_version
        )
    )


def request_training(session: Session, settings: Settings, model: MlModel, actor: str) -> Job:
    if model.kind != ModelKind.sharded_classifier:
        raise conflict("wrong_model_kind", "only sharded classifiers are trained by lethe")
    if model.status == ModelStatus.training:
        raise conflict("training_in_progress", "this model is already being trained")
    if model.status == ModelStatus.ready:
        raise conflict("model_already_trained", "this model has been trained already")
    if ModelConfig.model_validate(model.config).sisa_config is None:
        raise conflict("no_training_records", "ingest training records before training")
    model.status = ModelStatus.training
    job = Job(
        id=uuid.uuid4(), kind=JobKind.train, model_id=model.id, shard=None, status=JobStatus.pending
    )
    session.add(job)
    session.flush()
    append_event(
        session,
        actor=actor,
        action="model.training_requested",
        target_type="model",
        target_id=str(model.id),
        details={"model": model.name, "job_id": str(job.id)},
    )
    enqueue_after_commit(session, settings, TASK_TRAIN_MODEL, [str(job.id)])
    return job


def get_job(session: Session, job_id: uuid.UUID) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job_not_found", "no job with this id")
    return job


def add_version(
    session: Session,
    model: MlModel,
    cause: VersionCause,
    *,
    manifest: dict[str, Any],
    manifest_hash: str,
    request_ids: list[str],
    metrics: dict[str, Any],
) -> int:
    """The model's next version, serving from now on (the model row is locked by the caller):
    after a training or an erasure's retrain. Its number."""
    number = (model.current_version or 0) + 1
    session.add(
        ModelVersion(
            id=uuid.uuid4(),
            model_id=model.id,
            number=number,
            manifest=manifest,
            manifest_hash=manifest_hash,
            cause=cause,
            request_ids=request_ids,
            metrics=metrics,
        )
    )
    model.current_version = number
    return number


def publish_trained_version(
    session: Session,
    model: MlModel,
    job: Job,
    *,
    manifest: dict[str, Any],
    manifest_hash: str,
    metrics: dict[str, Any],
    actor: str,
) -> int:
    """A training job's result becomes the model's next version: the model is ready, the job
    done, and ``model.trained`` is in the log. Shared by every kind of model lethe trains."""
    number = add_version(
        session,
        model,
        VersionCause.training,
        manifest=manifest,
        manifest_hash=manifest_hash,
        request_ids=[],
        metrics=metrics,
    )
    model.status = ModelStatus.ready
    jobs.finish(session, job, {"version": number, **metrics})
    append_event(
        session,
        actor=actor,
        action="model.trained",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "version": number,
            "job_id": str(job.id),
            **metrics,
            "manifest_hash": manifest_hash,
        },
    )
    return number
