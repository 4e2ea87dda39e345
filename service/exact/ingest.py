"""CSV ingestion of a model's training records: keyed-hash subjects, SISA placement."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models.sisa import SisaConfig, assign_shard, assign_slice
from models.tabular import FeatureSpec
from service.audit import append_event
from service.core.config import Settings
from service.core.errors import conflict, invalid
from service.core.security import subject_ref
from service.db.enums import ModelStatus, RecordSplit
from service.db.tables import DataSubject, MlModel, TrainingRecord
from service.registry.config import ModelConfig

MAX_COLUMNS = 200


@dataclass(frozen=True)
class IngestSummary:
    records: int
    subjects: int
    train_records: int
    holdout_records: int
    classes: list[str]
    feature_columns: int


def _parse_value(raw: str) -> float | str | None:
    text = raw.strip()
    if text == "" or text.upper() in {"NA", "NAN", "NULL"}:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else None


def _infer_spec(rows: list[dict[str, Any]], columns: list[str]) -> FeatureSpec:
    # Column *types* only: no statistic of the data enters the featurizer.
    numeric = tuple(c for c in columns if all(not isinstance(r[c], str) for r in rows))
    categorical = tuple(c for c in columns if c not in numeric)
    return FeatureSpec(numeric=numeric, categorical=categorical)


def partition_salt(model_name: str) -> str:
    return f"lethe|{model_name}"


def is_holdout(ref: str, fraction: float) -> bool:
    bucket = int(hashlib.sha256(f"holdout|{ref}".encode()).hexdigest()[:8], 16) % 10_000
    return bucket < fraction * 10_000


def record_key(model_name: str, ref: str, occurrence: int) -> str:
    return hashlib.sha256(f"{model_name}|{ref}|{occurrence}".encode()).hexdigest()[:32]


def ingest_csv(
    session: Session, settings: Settings, model: MlModel, data: bytes, actor: str
) -> IngestSummary:
    if model.status != ModelStatus.registered:
        raise conflict(
            "model_already_trained",
            "records can only be ingested before the model's first training",
        )
    if session.scalar(select(func.count()).where(TrainingRecord.model_id == model.id)):
        raise conflict("records_already_ingested", "this model already has training records")
    config = ModelConfig.model_validate(model.config)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid("invalid_csv", "the upload is not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if len(header) > MAX_COLUMNS:
        raise invalid("invalid_csv", f"at most {MAX_COLUMNS} columns are accepted")
    if len(set(header)) != len(header):
        raise invalid("duplicate_column", "the CSV header names a column twice")
    missing = [c for c in (config.subject_column, config.label_column) if c not in header]
    if missing:
        raise invalid("missing_column", "the CSV lacks a configured column", columns=missing)
    feature_columns = [c for c in header if c not in (config.subject_column, config.label_column)]
    if not feature_columns:
        raise invalid("invalid_csv", "the CSV has no feature columns")

    rows: list[dict[str, Any]] = []
    refs: list[str] = []
    labels: list[str] = []
    try:
        for line_no, raw in enumerate(reader, start=2):
            if None in raw or any(v is None for v in raw.values()):
                raise invalid("invalid_csv", f"line {line_no} has the wrong number of fields")
            subject = raw[config.subject_column].strip()
            label = raw[config.label_column].strip()
            if not subject or not label:
                raise invalid("invalid_csv", f"line {line_no} has an empty subject or label field")
            refs.append(subject_ref(settings, subject))
            labels.append(label)
            rows.append({c: _parse_value(raw[c]) for c in feature_columns})
    except csv.Error as exc:
        raise invalid("invalid_csv", "the upload is not well-formed CSV") from exc
    if not rows:
        raise invalid("invalid_csv", "the CSV has no data rows")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise invalid("invalid_csv", "the label column needs at least two classes")

    spec = _infer_spec(rows, feature_columns)
    sisa = SisaConfig(
        shards=config.sisa.shards,
        slices=config.sisa.slices,
        input_dim=spec.input_dim,
        num_classes=len(classes),
        hidden=tuple(config.sisa.hidden),
        epochs=config.sisa.epochs,
        learning_rate=config.sisa.learning_rate,
        batch_size=config.sisa.batch_size,
        seed=config.sisa.seed,
        partition_salt=partition_salt(model.name),
    )
    class_index = {c: i for i, c in enumerate(classes)}
    occurrences: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    for ref, label, row in zip(refs, labels, rows, strict=True):
        key = record_key(model.name, ref, occurrences[ref])
        occurrences[ref] += 1
        records.append(
            {
                "model_id": model.id,
                "record_key": key,
                "subject_ref": ref,
                "shard": assign_shard(ref, sisa),
                "slice": assign_slice(key, sisa),
                "split": (
                    RecordSplit.holdout
                    if is_holdout(ref, config.holdout_fraction)
                    else RecordSplit.train
                ),
                "payload": row,
                "label": class_index[label],
            }
        )
    session.execute(
        pg_insert(DataSubject).on_conflict_do_nothing(),
        [{"subject_ref": ref} for ref in occurrences],
    )
    session.execute(insert(TrainingRecord), records)
    model.config = config.model_copy(
        update={"feature_spec": spec.to_dict(), "classes": classes, "sisa_config": sisa.to_dict()}
    ).model_dump(mode="json")
    session.flush()
    holdout = sum(1 for r in records if r["split"] == RecordSplit.holdout)
    summary = IngestSummary(
        records=len(records),
        subjects=len(occurrences),
        train_records=len(records) - holdout,
        holdout_records=holdout,
        classes=classes,
        feature_columns=len(feature_columns),
    )
    append_event(
        session,
        actor=actor,
        action="model.records_ingested",
        target_type="model",
        target_id=str(model.id),
        details={
            "model": model.name,
            "records": summary.records,
            "subjects": summary.subjects,
            "train_records": summary.train_records,
            "holdout_records": summary.holdout_records,
        },
    )
    return summary
