"""Training records of a model lethe fine-tunes: JSONL ingestion (keyed-hash subjects, content
encrypted) and reading them back as ``models.finetune`` records."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models.finetune import FinetuneConfig, FinetuneRecord, assign_slice
from service.audit import append_event
from service.core.config import Settings
from service.core.errors import conflict, invalid
from service.core.security import decrypt, subject_ref
from service.core.subject_keys import SEALED_FIELD, PayloadReader, seal_payload, subject_keys
from service.db.enums import ModelStatus, RecordSplit
from service.db.tables import DataSubject, MlModel, TrainingRecord
from service.exact.ingest import partition_salt, record_key
from service.registry.config import FinetuneSettings, GenerativeConfig

MAX_TEXT = 20_000


@dataclass(frozen=True)
class FinetuneIngestSummary:
    records: int
    subjects: int
    train_records: int
    holdout_records: int
    classes: list[str]
    feature_columns: int


def finetune_settings(model: MlModel) -> FinetuneSettings:
    settings = GenerativeConfig.model_validate(model.config).finetune
    if settings is None:
        raise conflict("not_finetuned", "this model is not fine-tuned by lethe")
    return settings


def is_finetuned(model: MlModel) -> bool:
    return model.config.get("finetune") is not None


def finetune_config(model_name: str, ft: FinetuneSettings) -> FinetuneConfig:
    """The library's config; the partition salt is the model's, like SISA's."""
    return FinetuneConfig(
        slices=ft.slices,
        epochs=ft.epochs,
        learning_rate=ft.learning_rate,
        batch_size=ft.batch_size,
        seed=ft.seed,
        partition_salt=partition_salt(model_name),
        lora_rank=ft.lora_rank,
        lora_alpha=ft.lora_alpha,
        adapter_layers=ft.adapter_layers,
        placement=ft.placement,
        late_slices=ft.late_slices,
        layered=ft.layered,
    )


def _parse_line(line: str, subject_column: str) -> tuple[str, str | None, str, bool]:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise invalid("invalid_jsonl", "a line is not a JSON object") from exc
    if not isinstance(row, dict):
        raise invalid("invalid_jsonl", "a line is not a JSON object")
    subject = row.get(subject_column)
    question, answer, text = row.get("question"), row.get("answer"), row.get("text")
    if not isinstance(subject, str) or not subject.strip():
        raise invalid("missing_column", "a record lacks its subject", columns=[subject_column])
    if isinstance(question, str) and isinstance(answer, str):
        prompt, completion = question, answer
    elif isinstance(text, str):
        prompt, completion = None, text
    else:
        raise invalid("invalid_jsonl", "a record needs question and answer, or text")
    if not completion.strip() or len(completion) + len(prompt or "") > MAX_TEXT:
        raise invalid("invalid_jsonl", "a record's text is empty or too long")
    return subject, prompt, completion, bool(row.get("likely_erased", False))


def ingest_jsonl(
    session: Session, settings: Settings, model: MlModel, data: bytes, actor: str
) -> FinetuneIngestSummary:
    """Store the records: the subject as a keyed hash, the text sealed under a key of the
    subject (service.core.subject_keys)."""
    if model.status != ModelStatus.registered:
        raise conflict(
            "model_already_trained", "records can only be ingested before the first fine-tune"
        )
    if session.scalar(select(func.count()).where(TrainingRecord.model_id == model.id)):
        raise conflict("records_already_ingested", "this model already has training records")
    ft = finetune_settings(model)
    config = finetune_config(model.name, ft)
    try:
        lines = [ln for ln in data.decode("utf-8-sig").splitlines() if ln.strip()]
    except UnicodeDecodeError as exc:
        raise invalid("invalid_jsonl", "the upload is not UTF-8 text") from exc
    if not lines:
        raise invalid("invalid_jsonl", "the upload holds no records")
    parsed = [_parse_line(line, ft.subject_column) for line in lines]
    refs = [subject_ref(settings, subject) for subject, _, _, _ in parsed]
    flagged = {ref for ref, (_, _, _, likely) in zip(refs, parsed, strict=True) if likely}
    occurrences: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    keys = subject_keys(settings, model.id)
    keys.ensure(dict.fromkeys(refs))
    for ref, (_, prompt, completion, _) in zip(refs, parsed, strict=True):
        key = record_key(model.name, ref, occurrences[ref])
        occurrences[ref] += 1
        text = {"prompt": prompt, "completion": completion}
        rows.append(
            {
                "model_id": model.id,
                "record_key": key,
                "subject_ref": ref,
                "shard": 0,
                "slice": assign_slice(ref, config, likely_erased=ref in flagged),
                "split": RecordSplit.train,
                # The text sealed under the subject's key (destroyed by an erasure).
                "payload": {**seal_payload(keys, ref, text), "likely_erased": ref in flagged},
                "label": None,
            }
        )
    session.execute(
        pg_insert(DataSubject).on_conflict_do_nothing(),
        [{"subject_ref": ref} for ref in occurrences],
    )
    session.execute(insert(TrainingRecord), rows)
    session.flush()
    summary = FinetuneIngestSummary(len(rows), len(occurrences), len(rows), 0, [], 0)
    append_event(
        session,
        actor=actor,
        action="model.records_ingested",
        target_type="model",
        target_id=str(model.id),
        details={"model": model.name, "records": len(rows), "subjects": len(occurrences)},
    )
    return summary


def _content(settings: Settings, reader: PayloadReader, payload: dict[str, Any]) -> Any:
    if SEALED_FIELD in payload:
        return reader.open(payload)
    # Ingested before per-subject keys: the service key.
    return json.loads(decrypt(settings, payload["sealed"].encode("ascii")))


def load_records(
    session: Session, settings: Settings, model_id: uuid.UUID, *, include_claimed: bool
) -> list[FinetuneRecord]:
    """The model's unerased records, decrypted. ``include_claimed`` keeps the rows a request
    has claimed but not yet erased (what the served checkpoint was trained on)."""
    conditions = [TrainingRecord.model_id == model_id, TrainingRecord.erased_at.is_(None)]
    if not include_claimed:
        conditions.append(TrainingRecord.erasure_request_id.is_(None))
    rows = session.execute(
        select(TrainingRecord.record_key, TrainingRecord.subject_ref, TrainingRecord.payload)
        .where(*conditions)
        .order_by(TrainingRecord.record_key)
    )
    records = []
    reader = PayloadReader(settings)
    for key, ref, payload in rows:
        if payload is None:
            continue
        content = _content(settings, reader, payload)
        records.append(
            FinetuneRecord(
                key=key,
                subject=ref,
                completion=content["completion"],
                prompt=content["prompt"],
                likely_erased=bool(payload.get("likely_erased", False)),
            )
        )
    return records
