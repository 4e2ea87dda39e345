"""The certificate of a model that held nothing of the subject: where lethe looked, what it
searched, and that it found no record. A request whose every model is in this case ends with
the outcome "no personal data held" (service.erasure.lifecycle), not "erased"."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.enums import ActionStatus, CertificateKind, RecordSplit
from service.db.tables import ErasureRequest, MlModel, RequestAction, TrainingRecord
from service.erasure.certificates import ExactRetrainCertificate, issue_certificate


def searched_records(session: Session, model: MlModel) -> dict[str, int]:
    """How many records of the model lethe searched, by split (erased ones still counted:
    their keys and subject references stay, only their content goes)."""
    rows = session.execute(
        select(TrainingRecord.split, func.count())
        .where(TrainingRecord.model_id == model.id)
        .group_by(TrainingRecord.split)
    ).all()
    counts = {split.value: 0 for split in RecordSplit}
    for split, n in rows:
        counts[str(split)] = int(n)
    return counts


def no_data_words(model: str, searched: dict[str, int]) -> str:
    total = sum(searched.values())
    return (
        f"lethe looked for this person in {model}: it searched all {total} record(s) the model "
        f"was trained or evaluated on ({searched.get('train', 0)} used for training, "
        f"{searched.get('holdout', 0)} kept aside for testing) and none of them belongs to this "
        f"person. Nothing had to be erased from this model."
    )


def no_data_certificate(
    session: Session, request: ErasureRequest, model: MlModel
) -> dict[str, Any]:
    searched = searched_records(session, model)
    return {
        "kind": CertificateKind.no_data_held.value,
        "request_id": str(request.id),
        "subject_ref": request.subject_ref,
        "model": model.name,
        "looked_for": "records whose subject reference (the keyed hash of the identifier) is "
        "the request's, in the model's training and held-out records",
        "records_searched": searched,
        "records_found": 0,
        "searched_at": utcnow().isoformat(),
        "plain_words": no_data_words(model.name, searched),
    }


def issue_no_data_certificates(session: Session, request: ErasureRequest, actor: str) -> int:
    """One certificate per model whose action was skipped for want of records."""
    found = session.execute(
        select(RequestAction, MlModel)
        .join(MlModel, MlModel.id == RequestAction.model_id)
        .where(
            RequestAction.request_id == request.id,
            RequestAction.status == ActionStatus.skipped,
        )
        .order_by(MlModel.name)
    ).all()
    for action, model in found:
        body = no_data_certificate(session, request, model)
        # issue_certificate takes the typed bodies; this one shares their envelope.
        issue_certificate(session, action, model, cast(ExactRetrainCertificate, body), actor)
    return len(found)
