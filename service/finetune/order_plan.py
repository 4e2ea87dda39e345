"""How many slice orders (S3T's permutations) a fine-tune is worth keeping: each order costs
one more fine-tune's training time and checkpoints, and buys adapters kept on after an erasure.

Costs are priced from the model's own first training (its measured seconds and checkpoint
bytes, divided by the orders it trained); the adapters kept are the average over seeded random
erasures of 1, 5 and 20 of its subjects (``models.finetune.order_plan``). Reads subject hashes
and placement flags only, never a record's text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.finetune import FinetuneRecord, order_plan
from service.db.enums import VersionCause
from service.db.tables import MlModel, ModelVersion, TrainingRecord
from service.finetune.records import finetune_config, finetune_settings, is_finetuned

# S3T's orders are rotations of the slices; more than 8 is never configurable.
MAX_ORDERS = 8
ERASURE_SIZES = (1, 5, 20)


def _subjects(session: Session, model: MlModel) -> list[FinetuneRecord]:
    """The model's unerased records as placement needs them: key, subject hash, flag."""
    rows = session.execute(
        select(
            TrainingRecord.record_key,
            TrainingRecord.subject_ref,
            TrainingRecord.payload["likely_erased"].as_boolean(),
        ).where(TrainingRecord.model_id == model.id, TrainingRecord.erased_at.is_(None))
    )
    return [
        FinetuneRecord(key=key, subject=ref, completion="", likely_erased=bool(likely))
        for key, ref, likely in rows
    ]


def _first_training(session: Session, model: MlModel) -> dict[str, Any] | None:
    return session.scalar(
        select(ModelVersion.metrics)
        .where(ModelVersion.model_id == model.id, ModelVersion.cause == VersionCause.training)
        .order_by(ModelVersion.number)
        .limit(1)
    )


def order_tradeoff(session: Session, model: MlModel) -> dict[str, Any] | None:
    """The order trade-off of a fine-tuned model (None: lethe does not fine-tune it).

    ``measured`` is false before the first training: the rows then carry no seconds or bytes.
    """
    if not is_finetuned(model):
        return None
    settings = finetune_settings(model)
    config = finetune_config(model.name, settings)
    metrics = _first_training(session, model) or {}
    trained = int(metrics.get("orders", 1))
    measured = "training_seconds" in metrics and "checkpoint_bytes" in metrics
    per_order_seconds = float(metrics.get("training_seconds", 0.0)) / trained
    per_checkpoint = int(metrics.get("checkpoint_bytes", 0)) // (trained * config.slices)
    records = _subjects(session, model)
    rows = order_plan(
        config,
        records,
        max_orders=min(config.slices, MAX_ORDERS),
        checkpoint_bytes=per_checkpoint,
        finetune_seconds=per_order_seconds,
        ks=ERASURE_SIZES,
    )
    if not measured:
        for row in rows:
            row["checkpoint_bytes"] = row["training_seconds"] = None
    return {
        "slices": config.slices,
        "layered": config.layered,
        "orders_configured": settings.orders,
        "orders_trained": trained if measured else None,
        "measured": measured,
        "subjects": len({r.subject for r in records}),
        "erasure_sizes": list(ERASURE_SIZES),
        "rows": rows,
    }
