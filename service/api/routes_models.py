"""Models: register (sharded classifiers lethe trains, generative models it serves), ingest
records, train, versions, predict, guarded generation, rule-set versions; jobs."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, File, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy import select

from service.api.deps import MlWrite, ModelRead, SessionDep, SettingsDep, audited
from service.api.schemas import (
    GenerateIn,
    GenerateOut,
    IngestOut,
    JobOut,
    ModelOut,
    PredictIn,
    PredictOut,
    RegisterModelIn,
    RuleSetOut,
    VersionOut,
)
from service.core.errors import DomainError, conflict
from service.db.enums import ModelKind
from service.db.tables import Job, MlModel, ModelVersion, RuleSetVersion
from service.exact.ingest import ingest_csv
from service.exact.serving import predict as predict_rows
from service.finetune.records import ingest_jsonl, is_finetuned
from service.finetune.training import request_finetune
from service.registry.service import (
    get_job,
    get_model,
    register_model,
    validate_registration,
)
from service.registry.service import request_training as start_training
from service.rules.finetuned_serving import finetuned_generate, read_finetuned
from service.rules.serving import guarded_generate

router = APIRouter(prefix="/v1", tags=["models"])


def model_out(model: MlModel) -> ModelOut:
    return ModelOut(
        name=model.name,
        kind=model.kind,
        status=model.status,
        current_version=model.current_version,
        config=model.config,
        policy=model.policy,
        created_at=model.created_at,
    )


@router.post("/models", status_code=201, response_model=ModelOut)
def register(
    body: Annotated[RegisterModelIn, Body()], session: SessionDep, principal: MlWrite
) -> ModelOut:
    try:
        # The body's schemas have checked the config and policy; this adds what only the
        # server can check (the model directory exists, policy "both" needs a fine-tune).
        config, policy = validate_registration(
            body.kind,
            body.config.model_dump(exclude_unset=True),
            body.policy.model_dump(exclude_unset=True),
        )
    except ValidationError as exc:
        # Same shape as any other invalid body, located under "body".
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None
    model = register_model(audited(session), body.name, body.kind, config, policy, principal.actor)
    session.commit()
    return model_out(model)


@router.get("/models", response_model=list[ModelOut])
def list_models(session: SessionDep, _: ModelRead) -> list[ModelOut]:
    return [model_out(m) for m in session.scalars(select(MlModel).order_by(MlModel.name))]


@router.get("/models/{name}", response_model=ModelOut)
def read_model(name: str, session: SessionDep, _: ModelRead) -> ModelOut:
    return model_out(get_model(session, name))


@router.post(
    "/models/{name}/records",
    status_code=201,
    response_model=IngestOut,
    # The file part: CSV for sharded classifiers, JSON lines for fine-tuned generative models.
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "encoding": {"file": {"contentType": "text/csv, application/jsonl"}}
                }
            }
        }
    },
)
def ingest(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: MlWrite,
    file: Annotated[UploadFile, File(description="CSV with a header row")],
) -> IngestOut:
    model = get_model(audited(session), name, lock=True)
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise DomainError(413, "payload_too_large", "the upload is too large")
    if is_finetuned(model):  # JSONL of question/answer or text, each with a subject
        summary: object = ingest_jsonl(session, settings, model, data, principal.actor)
    else:
        summary = ingest_csv(session, settings, model, data, principal.actor)
    session.commit()
    return IngestOut(**summary.__dict__)


@router.post("/models/{name}/train", status_code=202, response_model=JobOut)
def train(name: str, session: SessionDep, settings: SettingsDep, principal: MlWrite) -> JobOut:
    model = get_model(audited(session), name, lock=True)
    if is_finetuned(model):
        job = request_finetune(session, settings, model, principal.actor)
    else:
        job = start_training(session, settings, model, principal.actor)
    session.commit()
    return job_out(job, model.name)


@router.get("/models/{name}/versions", response_model=list[VersionOut])
def versions(name: str, session: SessionDep, _: ModelRead) -> list[VersionOut]:
    model = get_model(session, name)
    rows = session.scalars(
        select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.number)
    )
    return [
        VersionOut(
            number=v.number,
            cause=v.cause,
            manifest_hash=v.manifest_hash,
            created_at=v.created_at,
            request_ids=v.request_ids,
            metrics=v.metrics,
            purged=v.purged_at is not None,
        )
        for v in rows
    ]


@router.post("/models/{name}/predict", response_model=PredictOut)
def predict(
    name: str, body: PredictIn, session: SessionDep, settings: SettingsDep, _: MlWrite
) -> PredictOut:
    result = predict_rows(settings, session, get_model(session, name), body.rows)
    return PredictOut(
        model=name,
        version=result.version,
        classes=result.classes,
        predictions=result.predictions,
        probabilities=result.probabilities,
    )


def job_out(job: Job, model_name: str) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        model=model_name,
        shard=job.shard,
        status=job.status,
        progress=job.progress,
        attempts=job.attempts,
        error_code=job.error_code,
        result=job.result or {},
        created_at=job.created_at,
        finished_at=job.finished_at,
    )


@router.get("/jobs/{job_id}", response_model=JobOut)
def read_job(job_id: uuid.UUID, session: SessionDep, _: ModelRead) -> JobOut:
    job = get_job(session, job_id)
    model = session.get_one(MlModel, job.model_id)
    return job_out(job, model.name)


@router.post("/models/{name}/generate", response_model=GenerateOut)
def generate(
    name: str, body: GenerateIn, session: SessionDep, settings: SettingsDep, _: MlWrite
) -> GenerateOut:
    """Guarded generation: the answer has passed the active verifier rules."""
    model = get_model(session, name)
    if model.kind != ModelKind.generative:
        raise conflict("wrong_model_kind", "only generative models generate")
    if is_finetuned(model):
        read = read_finetuned(settings, session, model)
        # This host's purges of the model are confirmed before an answer is served from it;
        # then no transaction stays open while generating.
        session.commit()
        session.close()
        tuned = finetuned_generate(
            settings, read, body.prompt, seed=body.seed, max_new_tokens=body.max_new_tokens
        )
        return GenerateOut(
            model=name,
            text=tuned.text,
            model_version=tuned.model_version,
            rule_set_version=tuned.rule_set_version,
            rounds_used=tuned.rounds_used,
            refused=tuned.refused,
            reason=tuned.reason,
        )
    answer = guarded_generate(
        settings, session, model, body.prompt, seed=body.seed, max_new_tokens=body.max_new_tokens
    )
    return GenerateOut(
        model=name,
        text=answer.text,
        rule_set_version=answer.rule_set_version,
        rounds_used=answer.rounds_used,
        refused=answer.refused,
        reason=answer.reason,
    )


@router.get("/models/{name}/rule-sets", response_model=list[RuleSetOut])
def rule_sets(name: str, session: SessionDep, _: ModelRead) -> list[RuleSetOut]:
    """Rule-set versions with their calibration; the rules themselves stay encrypted."""
    model = get_model(session, name)
    rows = session.scalars(
        select(RuleSetVersion)
        .where(RuleSetVersion.model_id == model.id)
        .order_by(RuleSetVersion.version)
    )
    return [
        RuleSetOut(
            version=r.version,
            status=r.status,
            rule_count=r.rule_count,
            request_ids=r.request_ids,
            # Per-request evidence is the next activation's cache, not a figure for users.
            calibration={k: v for k, v in r.calibration.items() if k != "evidence"},
            activated_at=r.activated_at,
            superseded_at=r.superseded_at,
        )
        for r in rows
    ]
