"""CSV ingestion of a model's training records: keyed-hash subjects, SISA placement."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models.sisa import SisaConfig, assign_shard, assign_slice, default_shards
from models.tabular import FeatureSpec
from service.audit import append_event
from service.core.config import Settings
from service.core.errors import conflict, invalid
from service.core.security import subject_ref
from service.core.subject_keys import seal_payloads, subject_keys
from service.db.enums import ModelStatus, RecordSplit
from service.db.tables import DataSubject, MlModel, TrainingRecord
from service.exact.placement import flagged_subjects, placement_report
from service.exact.public_base import load_public_base
from service.registry.config import ModelConfig, SisaSettings

MAX_COLUMNS = 200


@dataclass(frozen=True)
class IngestSummary:
    records: int
    subjects: int
    train_records: int
    holdout_records: int
    classes: list[str]
    feature_columns: int
    placement: dict[str, Any] | None


def _parse_value(raw: str) -> float | str | None:
    text = raw.strip()
    if text == "" or text.upper() in {"NA", "NAN", "NULL"}:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else None


def _infer_spec(rows: list[dict[str, Any]], columns: list[str], knot_spacing: float) -> FeatureSpec:
    # Column *types* only: no statistic of the data enters the featurizer.
    numeric = tuple(c for c in columns if all(not isinstance(r[c], str) for r in rows))
    categorical = tuple(c for c in columns if c not in numeric)
    return FeatureSpec(numeric=numeric, categorical=categorical, knot_spacing=knot_spacing)


def build_sisa_config(
    settings: SisaSettings,
    *,
    input_dim: int,
    num_classes: int,
    salt: str,
    training_records: int,
    tail_slices: int = 0,
    base_hash: str = "",
) -> SisaConfig:
    """The library config from the registry's settings (the library's converging defaults);
    shards left unset get ``default_shards`` of the training records."""
    return SisaConfig(
        shards=default_shards(training_records) if settings.shards is None else settings.shards,
        slices=settings.slices,
        input_dim=input_dim,
        num_classes=num_classes,
        hidden=tuple(settings.hidden),
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        seed=settings.seed,
        partition_salt=salt,
        validation_fraction=settings.validation_fraction,
        patience=settings.patience,
        max_rounds=settings.max_rounds,
        tail_slices=tail_slices,
        base_hash=base_hash,
    )


def partition_salt(model_name: str) -> str:
    return f"lethe|{model_name}"


def is_holdout(ref: str, fraction: float) -> bool:
    bucket = int(hashlib.sha256(f"holdout|{ref}".encode()).hexdigest()[:8], 16) % 10_000
    return bucket < fraction * 10_000


def record_key(model_name: str, ref: str, occurrence: int) -> str:
    return hashlib.sha256(f"{model_name}|{ref}|{occurrence}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Upload:
    """The CSV's data rows, parsed: per row the subject's keyed hash, its label, its placement
    hint (when the model places by a column) and its feature values."""

    feature_columns: list[str]
    refs: list[str]
    labels: list[str]
    hints: list[str]
    rows: list[dict[str, Any]]


def ingest_csv(
    session: Session, settings: Settings, model: MlModel, data: bytes, actor: str
) -> IngestSummary:
    _check_ingestable(session, model)
    config = ModelConfig.model_validate(model.config)
    upload = _read_upload(settings, config, data)
    classes = sorted(set(upload.labels))
    if len(classes) < 2:
        raise invalid("invalid_csv", "the label column needs at least two classes")
    spec = _infer_spec(upload.rows, upload.feature_columns, config.knot_spacing)
    sisa, flagged = _placement(config, model.name, spec, upload, len(classes))
    records = _placed_records(model, config, sisa, upload, classes, flagged)
    subjects = list(dict.fromkeys(upload.refs))
    if settings.encrypt_records:
        _seal_records(settings, model, subjects, records)
    session.execute(
        pg_insert(DataSubject).on_conflict_do_nothing(),
        [{"subject_ref": ref} for ref in subjects],
    )
    session.execute(insert(TrainingRecord), records)
    report = _placement_report(config, sisa, records)
    model.config = config.model_copy(
        update={
            "sisa": config.sisa.model_copy(update={"shards": sisa.shards}),
            "feature_spec": spec.to_dict(),
            "classes": classes,
            "sisa_config": sisa.to_dict(),
            "placement_report": report,
        }
    ).model_dump(mode="json")
    session.flush()
    holdout = sum(1 for r in records if r["split"] == RecordSplit.holdout)
    summary = IngestSummary(
        records=len(records),
        subjects=len(subjects),
        train_records=len(records) - holdout,
        holdout_records=holdout,
        classes=classes,
        feature_columns=len(upload.feature_columns),
        placement=report,
    )
    _audit_ingested(session, model, summary, actor)
    return summary


def _seal_records(
    settings: Settings, model: MlModel, subjects: list[str], records: list[dict[str, Any]]
) -> None:
    """Each record's features sealed under its subject's key: an erasure destroys the key, and
    with it every copy of the features (page free space, WAL, backups)."""
    keys = subject_keys(settings, model.id)
    keys.ensure(subjects)
    sealed = seal_payloads(keys, ((r["subject_ref"], r["payload"]) for r in records))
    for record, payload in zip(records, sealed, strict=True):
        record["payload"] = payload


def _check_ingestable(session: Session, model: MlModel) -> None:
    if model.status != ModelStatus.registered:
        raise conflict(
            "model_already_trained",
            "records can only be ingested before the model's first training",
        )
    if session.scalar(select(func.count()).where(TrainingRecord.model_id == model.id)):
        raise conflict("records_already_ingested", "this model already has training records")


def _placement_column(config: ModelConfig) -> str | None:
    return config.placement.column if config.placement is not None else None


def _read_upload(settings: Settings, config: ModelConfig, data: bytes) -> _Upload:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid("invalid_csv", "the upload is not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(text))
    feature_columns = _feature_columns(config, reader.fieldnames or [])
    upload = _Upload(feature_columns, [], [], [], [])
    try:
        for line_no, raw in enumerate(reader, start=2):
            _read_row(settings, config, upload, line_no, raw)
    except csv.Error as exc:
        raise invalid("invalid_csv", "the upload is not well-formed CSV") from exc
    if not upload.rows:
        raise invalid("invalid_csv", "the CSV has no data rows")
    return upload


def _feature_columns(config: ModelConfig, header: Sequence[str]) -> list[str]:
    """The header's feature columns, once the header is checked against the model's config."""
    if len(header) > MAX_COLUMNS:
        raise invalid("invalid_csv", f"at most {MAX_COLUMNS} columns are accepted")
    if len(set(header)) != len(header):
        raise invalid("duplicate_column", "the CSV header names a column twice")
    missing = [c for c in (config.subject_column, config.label_column) if c not in header]
    if missing:
        raise invalid("missing_column", "the CSV lacks a configured column", columns=missing)
    placement_column = _placement_column(config)
    if placement_column is not None and placement_column not in header:
        raise invalid("missing_column", "the CSV lacks a configured column", columns=["placement"])
    reserved = (config.subject_column, config.label_column, placement_column)
    feature_columns = [c for c in header if c not in reserved]
    if not feature_columns:
        raise invalid("invalid_csv", "the CSV has no feature columns")
    return feature_columns


def _read_row(
    settings: Settings, config: ModelConfig, upload: _Upload, line_no: int, raw: dict[str, Any]
) -> None:
    if None in raw or any(v is None for v in raw.values()):
        raise invalid("invalid_csv", f"line {line_no} has the wrong number of fields")
    subject = raw[config.subject_column].strip()
    label = raw[config.label_column].strip()
    if not subject or not label:
        raise invalid("invalid_csv", f"line {line_no} has an empty subject or label field")
    upload.refs.append(subject_ref(settings, subject))
    upload.labels.append(label)
    placement_column = _placement_column(config)
    if placement_column is not None:
        upload.hints.append(raw[placement_column])
    upload.rows.append({c: _parse_value(raw[c]) for c in upload.feature_columns})


def _placement(
    config: ModelConfig, model_name: str, spec: FeatureSpec, upload: _Upload, num_classes: int
) -> tuple[SisaConfig, set[str]]:
    """The SISA config the records are placed by, and the subjects placed in the tail slices."""
    base_hash, input_dim = "", spec.input_dim
    if config.public_base is not None:
        base = load_public_base(config.public_base, spec.input_dim)
        base_hash, input_dim = base.content_hash, base.feature_dim
    flagged: set[str] = set()
    if config.placement is not None:
        flagged = flagged_subjects(config.placement, upload.refs, upload.hints)
    sisa = build_sisa_config(
        config.sisa,
        input_dim=input_dim,
        num_classes=num_classes,
        salt=partition_salt(model_name),
        training_records=sum(
            1 for ref in upload.refs if not is_holdout(ref, config.holdout_fraction)
        ),
        tail_slices=config.placement.tail_slices if config.placement is not None else 0,
        base_hash=base_hash,
    )
    return sisa, flagged


def _placed_records(
    model: MlModel,
    config: ModelConfig,
    sisa: SisaConfig,
    upload: _Upload,
    classes: list[str],
    flagged: set[str],
) -> list[dict[str, Any]]:
    """One row per record: its key, shard, slice and split, ready to insert."""
    class_index = {c: i for i, c in enumerate(classes)}
    occurrences: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    for ref, label, row in zip(upload.refs, upload.labels, upload.rows, strict=True):
        key = record_key(model.name, ref, occurrences[ref])
        occurrences[ref] += 1
        records.append(
            {
                "model_id": model.id,
                "record_key": key,
                "subject_ref": ref,
                "shard": assign_shard(ref, sisa),
                "slice": assign_slice(key, sisa, likely_erased=ref in flagged),
                "likely_erased": ref in flagged,
                "split": (
                    RecordSplit.holdout
                    if is_holdout(ref, config.holdout_fraction)
                    else RecordSplit.train
                ),
                "payload": row,
                "label": class_index[label],
            }
        )
    return records


def _placement_report(
    config: ModelConfig, sisa: SisaConfig, records: list[dict[str, Any]]
) -> dict[str, Any] | None:
    if config.placement is None:
        return None
    return placement_report(
        sisa,
        config.placement,
        [(r["record_key"], r["likely_erased"]) for r in records if r["split"] == RecordSplit.train],
    )


def _audit_ingested(session: Session, model: MlModel, summary: IngestSummary, actor: str) -> None:
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
            "placement": summary.placement,
        },
    )
