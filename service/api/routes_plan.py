"""(S, R) per model: start a plan job (the accuracy/speed-up frontier on the model's own
retained data) and read the stored frontier and proposal; for a model lethe fine-tunes, the
slice orders' trade-off (computed on read)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from models.sisa.planning import DEFAULT_CANDIDATES
from service.api.deps import MlWrite, ModelRead, SessionDep, SettingsDep, audited
from service.api.routes_models import job_out
from service.api.schemas import JobOut, PlanIn, PlanOut
from service.db.enums import JobKind
from service.db.tables import Job
from service.exact.sisa_plan import PlanOptions, request_plan
from service.finetune.order_plan import order_tradeoff
from service.registry.config import ModelConfig
from service.registry.service import get_model

router = APIRouter(prefix="/v1", tags=["models"])


@router.post("/models/{name}/plan", status_code=202, response_model=JobOut)
def start_plan(
    name: str, body: PlanIn, session: SessionDep, settings: SettingsDep, principal: MlWrite
) -> JobOut:
    model = get_model(audited(session), name, lock=True)
    options = PlanOptions(
        budget_points=body.budget_points,
        se_margin=body.se_margin,
        erasure_rate=body.erasure_rate,
        auto=body.auto,
        max_records=body.max_records,
        candidates=tuple(body.candidates) if body.candidates else DEFAULT_CANDIDATES,
    )
    job = request_plan(session, settings, model, options, principal.actor)
    session.commit()
    return job_out(job, model.name)


@router.get("/models/{name}/plan", response_model=PlanOut)
def read_plan(name: str, session: SessionDep, _: ModelRead) -> PlanOut:
    """The latest plan job and the last frontier and proposal stored on the model; a fine-tune's
    slice-order trade-off."""
    model = get_model(session, name)
    job = session.scalar(
        select(Job)
        .where(Job.model_id == model.id, Job.kind == JobKind.plan_sisa)
        .order_by(Job.created_at.desc())
        .limit(1)
    )
    plan = None
    if model.kind == "sharded_classifier":
        plan = ModelConfig.model_validate(model.config).sisa_plan
    return PlanOut(
        model=model.name,
        job_id=job.id if job else None,
        job_status=job.status.value if job else None,
        plan=plan,
        orders=order_tradeoff(session, model),
    )
