"""Discovery before decision: which models in a request's scope hold records of its subject,
as counts per model (never contents), read with the same rules the planner applies when the
request is approved (service.planner.plan). Reads only."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.enums import ModelKind, RecordSplit
from service.db.tables import ErasureRequest, TrainingRecord
from service.planner.plan import is_both, models_in_scope


@dataclass(frozen=True)
class Finding:
    model: str
    kind: ModelKind
    # Records of the subject lethe holds for this model (not yet erased), by use.
    training: int
    held_out: int
    already_erased: int
    records_searched: int
    # A generative model may know the person from data lethe never saw: its answers are
    # screened whatever the counts say.
    screened: bool

    @property
    def holds(self) -> bool:
        return self.training + self.held_out > 0

    @property
    def words(self) -> str:
        if self.holds:
            parts = [f"{self.training} record(s) used in training"]
            if self.held_out:
                parts.append(f"{self.held_out} kept aside for testing")
            text = f"holds {' and '.join(parts)}"
        elif self.kind == ModelKind.generative and not self.records_searched:
            text = "lethe holds no training records of this model"
        else:
            text = f"holds no record of this person ({self.records_searched} records searched)"
        if self.already_erased:
            text += f"; {self.already_erased} of this person's record(s) already erased"
        if self.screened:
            text += "; its answers will be screened for this person in any case"
        return text


def discover(session: Session, request: ErasureRequest) -> list[Finding]:
    findings = []
    for model in models_in_scope(session, request):
        live = TrainingRecord.erased_at.is_(None)
        searched = session.scalar(select(func.count()).where(TrainingRecord.model_id == model.id))
        rows = session.execute(
            select(TrainingRecord.split, live, func.count())
            .where(
                TrainingRecord.model_id == model.id,
                TrainingRecord.subject_ref == request.subject_ref,
            )
            .group_by(TrainingRecord.split, live)
        ).all()
        counts = {(str(split), bool(is_live)): int(n) for split, is_live, n in rows}
        findings.append(
            Finding(
                model=model.name,
                kind=model.kind,
                training=counts.get((RecordSplit.train.value, True), 0),
                held_out=counts.get((RecordSplit.holdout.value, True), 0),
                already_erased=sum(n for (_, is_live), n in counts.items() if not is_live),
                records_searched=int(searched or 0),
                screened=model.kind == ModelKind.generative or is_both(model),
            )
        )
    return findings


def holds_nothing(findings: list[Finding]) -> bool:
    """Approving would end in "no personal data held": no model holds or screens anything."""
    return not any(f.holds or f.screened for f in findings)
