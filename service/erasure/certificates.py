"""Certificates: what lethe claims it did for one (request, model), written into the audit log.

Both kinds are built here as typed bodies, with their plain words stored in the body when
issued (so a report built from the audit log alone reads the same words the DPO saw):
``exact_retrain`` for slice retraining, ``conformal_risk`` (or an honest ``no_guarantee``) for
verifier rules, whose figures come from ``models.conformal``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.conformal import (
    BudgetCalibration,
    ConformalCertificate,
    ExitCalibration,
    ThresholdCalibration,
    build_certificate,
    describe_certificate,
)
from service.audit import append_event
from service.db.base import utcnow
from service.db.enums import ActionStatus, CertificateKind, Strategy
from service.db.tables import AuditEvent, Certificate, ErasureRequest, MlModel, RequestAction
from service.erasure.retrain_outcomes import (
    ExactnessResult,
    FinetuneRetrainOutcome,
    ShardRetrainOutcome,
)

EXACT_CLAIM = (
    "Exact unlearning: every shard that held the subject's records was retrained from the "
    "checkpoint taken before the first slice containing them, on the retained records only. "
    "The published model is the one that training on the retained data would have produced."
)
FINETUNE_CLAIM = (
    "Exact unlearning: the fine-tune was retrained from the checkpoint taken before the first "
    "slice containing the subject's records, on the retained records only. The published "
    "weights are the ones that fine-tuning on the retained data would have produced."
)

SWITCH_OFF_CLAIM = (
    "Exact unlearning by construction: serving switched at once to the stored state of the "
    "fine-tune before the first slice containing the subject's records. That state was "
    "computed from the earlier slices alone, none of which held the records, so it is the one "
    "fine-tuning on the retained records of those slices produces. The slices switched off are "
    "retrained on the retained records in the background; a further certificate follows."
)
RESTORE_TO_FOLLOW = (
    "The parts of the model switched off are being retrained without the records; a further "
    "certificate will supersede this one when they are back."
)


class ExactRetrainCertificate(TypedDict, total=False):
    kind: str
    request_id: str
    subject_ref: str
    model: str
    claim: str
    version_before: int | None
    version_after: int | None
    records_erased: dict[str, int]
    # A sharded classifier: one entry per retrained shard (ShardRetrainOutcome).
    shards_retrained: list[dict[str, Any]]
    # A fine-tune (policy both): its retrain, slice by slice (FinetuneRetrainOutcome).
    slices: dict[str, Any]
    determinism_check: str
    public_base: dict[str, Any]
    warnings: list[str]
    note: str
    destroyed_artifacts: list[dict[str, Any]]
    # What was physically removed from the database and what stays in WAL and backups.
    physical_deletion: dict[str, Any]
    # Where the local copies of the destroyed checkpoints were deleted, host by host
    # (service.erasure.host_purges).
    hosts: dict[str, Any]
    plain_words: str


class ConformalRiskCertificate(ConformalCertificate, total=False):
    request_id: str
    subject_ref: str
    model: str
    serving_threshold: float
    serving_budget: int
    interim: bool
    exact_removal_due_at: str
    serving_exit_threshold: float | None
    # What λ's calibration rests on, and whether this is the certificate issued at activation
    # (interim: synthetic leaks only, B not calibrated) or the one after calibration on the
    # model's own outputs (final).
    calibration_stage: str
    calibration_evidence: str
    plain_words: str


def exact_certificate(
    *,
    request: ErasureRequest,
    model: MlModel,
    shards: Sequence[ShardRetrainOutcome] = (),
    slices: FinetuneRetrainOutcome | None = None,
    records_erased: dict[str, int],
    version_before: int | None,
    version_after: int | None,
    note: str | None = None,
    public_base: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
    physical_deletion: dict[str, Any] | None = None,
) -> ExactRetrainCertificate:
    """A sharded classifier's certificate lists its retrained ``shards`` (none: deleting the
    rows was the whole erasure); a fine-tune's states its retrain as ``slices``."""
    body = ExactRetrainCertificate(
        kind=CertificateKind.exact_retrain.value,
        request_id=str(request.id),
        subject_ref=request.subject_ref,
        model=model.name,
        claim=_claim(slices),
        version_before=version_before,
        version_after=version_after,
        records_erased=records_erased,
    )
    if slices is None:
        body["shards_retrained"] = [s.to_json() for s in shards]
        checks = [s.exactness.status for s in shards]
    else:
        body["slices"] = slices.certificate_json()
        checks = [] if slices.switched_off else [slices.exactness.status]
    body["determinism_check"] = _determinism(checks)
    if public_base:
        body["public_base"] = public_base
    if warnings:
        body["warnings"] = warnings
    if note:
        body["note"] = note
    if physical_deletion:
        body["physical_deletion"] = physical_deletion
    body["plain_words"] = describe_exact(body)
    return body


def _claim(slices: FinetuneRetrainOutcome | None) -> str:
    if slices is None:
        return EXACT_CLAIM
    return SWITCH_OFF_CLAIM if slices.switched_off else FINETUNE_CLAIM


def _determinism(checks: Sequence[ExactnessResult]) -> str:
    """The certificate's verdict over its retrains' bit-exact checks."""
    if not checks:
        return "not_applicable"
    if all(c == ExactnessResult.bit_exact for c in checks):
        return ExactnessResult.bit_exact.value
    if any(c == ExactnessResult.mismatch for c in checks):
        return ExactnessResult.mismatch.value
    if any(c == ExactnessResult.pending for c in checks):
        return ExactnessResult.pending.value
    return ExactnessResult.not_run.value


def conformal_certificate(
    threshold: ThresholdCalibration,
    budget: BudgetCalibration | None,
    *,
    request: ErasureRequest,
    model: MlModel,
    false_flag_rate: float | None,
    rule_set_version: int,
    serving_threshold: float,
    serving_budget: int,
    exit_cal: ExitCalibration | None = None,
    serving_exit_threshold: float | None = None,
    stage: str = "interim",
    evidence: str = "",
) -> ConformalRiskCertificate:
    """``conformal_risk`` when λ is certified, else ``no_guarantee`` (models.conformal); the
    refinement rule in force (early exit, conformal B or the maximum) is stated in words."""
    body = cast(
        ConformalRiskCertificate,
        dict(
            build_certificate(
                threshold,
                budget,
                false_flag_rate=false_flag_rate,
                rule_set_version=rule_set_version,
                exit_cal=exit_cal,
            )
        ),
    )
    body["request_id"] = str(request.id)
    body["subject_ref"] = request.subject_ref
    body["model"] = model.name
    body["serving_threshold"] = serving_threshold
    body["serving_budget"] = serving_budget
    body["serving_exit_threshold"] = serving_exit_threshold
    body["calibration_stage"] = stage
    body["calibration_evidence"] = evidence
    words = describe_certificate(body)
    if evidence:
        words += f" λ was calibrated on {evidence}."
    body["plain_words"] = words
    return body


def issue_certificate(
    session: Session,
    action: RequestAction,
    model: MlModel,
    body: ExactRetrainCertificate | ConformalRiskCertificate,
    actor: str,
) -> Certificate:
    """Issue the (request, model)'s certificate; one issued before is superseded by it (kept,
    here and in the audit log, with the link)."""
    if body["kind"] != CertificateKind.exact_retrain:
        body = _mark_interim(session, action, model, body)
    previous = current_certificate(session, action.request_id, model.id)
    if previous is not None:
        previous.superseded_at = utcnow()
        session.flush()  # the one-current index sees the old row retired first
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    body_hash = hashlib.sha256(canonical.encode()).hexdigest()
    details: dict[str, Any] = {"kind": body["kind"], "body_sha256": body_hash}
    if previous is not None:
        details["supersedes"] = {"kind": previous.kind.value, "body_sha256": previous.body_hash}
    details["certificate"] = body
    event = append_event(
        session,
        actor=actor,
        action="certificate.issued",
        target_type="model",
        target_id=str(model.id),
        request_id=action.request_id,
        details=details,
    )
    certificate = Certificate(
        id=uuid.uuid4(),
        request_id=action.request_id,
        model_id=model.id,
        action_id=action.id,
        kind=CertificateKind(body["kind"]),
        body=json.loads(canonical),
        body_hash=body_hash,
        audit_seq=event.seq,
        supersedes_id=previous.id if previous is not None else None,
    )
    session.add(certificate)
    session.flush()
    return certificate


def _mark_interim(
    session: Session,
    action: RequestAction,
    model: MlModel,
    body: ExactRetrainCertificate | ConformalRiskCertificate,
) -> ExactRetrainCertificate | ConformalRiskCertificate:
    """Policy ``both``: while the exact removal of the same (request, model) is still to come,
    the rules certificate is interim and says by when the exact one is due."""
    exact = session.scalar(
        select(RequestAction).where(
            RequestAction.request_id == action.request_id,
            RequestAction.model_id == model.id,
            RequestAction.strategy == Strategy.exact_retrain,
        )
    )
    due = exact.detail.get("exact_due_at") if exact is not None else None
    if exact is None or due is None or exact.status in (ActionStatus.done, ActionStatus.skipped):
        return body
    marked = cast(ConformalRiskCertificate, dict(body))
    marked["interim"] = True
    marked["exact_removal_due_at"] = str(due)
    marked["plain_words"] = (
        f"Interim: {marked.get('plain_words', '')} Exact removal of the subject's data from "
        f"the model's weights is due by {due}; a further certificate will supersede this one."
    )
    return marked


def current_certificate(
    session: Session, request_id: uuid.UUID, model_id: uuid.UUID
) -> Certificate | None:
    return session.scalar(
        select(Certificate)
        .where(
            Certificate.request_id == request_id,
            Certificate.model_id == model_id,
            Certificate.superseded_at.is_(None),
        )
        .with_for_update()
    )


def plain_words(body: Mapping[str, Any]) -> str:
    """A few sentences a data-protection officer can read: the words stored when the
    certificate was issued, else derived from its figures."""
    if body.get("plain_words"):
        return str(body["plain_words"])
    if body.get("kind") == CertificateKind.exact_retrain:
        return describe_exact(body)
    return describe_certificate(body)


def describe_exact(body: Mapping[str, Any]) -> str:
    shards = body.get("shards_retrained", [])
    slices = body.get("slices")
    erased = body.get("records_erased", {})
    physical = (body.get("physical_deletion") or {}).get("statement")
    if not shards and not slices:
        words = (
            f"{erased.get('train', 0) + erased.get('holdout', 0)} record(s) were deleted. "
            + str(body.get("note", ""))
        ).strip()
        return f"{words} {physical}" if physical else words
    if slices and slices.get("stage") == "switched_off":
        return _describe_switch_off(body, erased, physical)
    if slices:
        retrained = slices["slices_total"] - slices["first_affected_slice"]
        parts = (
            f"the last {retrained} of the fine-tune's {slices['slices_total']} training stages, "
            "from the first that used them" + _orders_restored(slices)
        )
    else:
        parts = ", ".join(
            f"shard {s['shard']} from slice {s['first_affected_slice']}" for s in shards
        )
    check = {
        "bit_exact": "An independent retraining from scratch matched it bit for bit.",
        "mismatch": "WARNING: the independent retraining did not match bit for bit.",
        "pending": "An independent retraining from scratch is under way to check it bit for "
        "bit; a further certificate will record its result.",
    }.get(str(body.get("determinism_check")), "The bit-for-bit check was not run (policy).")
    words = (
        f"The subject's {erased.get('train', 0)} training record(s) were removed and the model "
        f"was retrained exactly where they had been used ({parts}); version "
        f"{body.get('version_before')} was replaced by version {body.get('version_after')} and "
        f"the checkpoints that had seen the records were deleted. {check}"
    )
    base = body.get("public_base")
    if base:
        words += (
            f" The shards train on features of a frozen public base (sha256 "
            f"{base['content_hash']}) attested to hold no subject data; erasure does not touch it."
        )
    if physical:
        words += f" {physical}"
    for warning in body.get("warnings", []):
        words += f" WARNING: {warning}."
    return words


def _describe_switch_off(body: Mapping[str, Any], erased: Mapping[str, int], physical: Any) -> str:
    words = (
        f"The subject's {erased.get('train', 0)} training record(s) were removed and, at once, "
        "the model was switched to the state it had before it ever learned from them (version "
        f"{body.get('version_before')} was replaced by version {body.get('version_after')}); "
        "that state was built only from other people's records, so the model no longer holds "
        "anything learned from the subject. The stored states that had seen the records were "
        "deleted."
    )
    words += _orders_switched(body.get("slices") or {})
    if physical:
        words += f" {physical}"
    return words


def _orders_switched(slices: Mapping[str, Any]) -> str:
    """A fine-tune kept trained in several orders of its training stages: which one serves and
    why it is exact (empty for one order)."""
    orders = slices.get("orders") or []
    if len(orders) < 2:
        return ""
    served = orders[slices.get("served_order", 0)]
    total = slices["slices_total"]
    return (
        f" The model is kept trained in {len(orders)} different orders of its {total} "
        f"training stages; it now serves order {served['order'] + 1}, where the subject's "
        f"records came latest, so {served['slices_kept']} of its {total} stages stay on. Each "
        "of those stages was built only from other people's records, before any stage that "
        "used the subject's; the stored states of every order that had seen the records were "
        "deleted."
    )


def _orders_restored(slices: Mapping[str, Any]) -> str:
    orders = slices.get("orders") or []
    if len(orders) < 2:
        return ""
    return (
        f"; each of the {len(orders)} orders the model is kept trained in was retrained the "
        "same way"
    )


def is_certified(kind: str) -> bool:
    # "No data held" is a checked claim too: every record of the model was searched.
    return kind in (
        CertificateKind.exact_retrain,
        CertificateKind.conformal_risk,
        CertificateKind.no_data_held,
    )


def chained_bodies(
    session: Session, certificates: Sequence[Certificate]
) -> dict[int, dict[str, Any] | None]:
    """The certificate body each row's ``certificate.issued`` event carries (None: the event
    is missing, is something else, or belongs to another request). The table is a cache of
    these: pages and reports show the chained body, and say so when the row differs."""
    seqs = [c.audit_seq for c in certificates]
    if not seqs:
        return {}
    events = {e.seq: e for e in session.scalars(select(AuditEvent).where(AuditEvent.seq.in_(seqs)))}
    found: dict[int, dict[str, Any] | None] = {}
    for cert in certificates:
        event = events.get(cert.audit_seq)
        ok = (
            event is not None
            and event.action == "certificate.issued"
            and event.request_id == cert.request_id
            and isinstance(event.details.get("certificate"), dict)
        )
        found[cert.audit_seq] = event.details["certificate"] if ok and event else None
    return found


def matches_chain(certificate: Certificate, chained: Mapping[str, Any] | None) -> bool:
    """The row's body, and its hash, are exactly what the audit log recorded."""
    if chained is None:
        return False
    canonical = json.dumps(chained, sort_keys=True, separators=(",", ":"), default=str)
    return (
        chained == certificate.body
        and hashlib.sha256(canonical.encode()).hexdigest() == certificate.body_hash
    )
