"""One shard's retrain after an erasure: load (short transaction), compute (none open).

The unlearning itself is ``models.sisa.unlearn_shard``: it finds the first affected slice by
content address, resumes from the checkpoint before it and names the checkpoints that saw the
erased rows. Around it this module adds what the certificate reports: the bit-exact check
(per the model's verify policy), accuracy before/after on held-out subjects and the membership
evidence. Publishing the result is ``service.exact.publish``.
"""

from __future__ import annotations

import hashlib
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from models.artifacts import ArtifactNotFound, ArtifactStore
from models.sisa import (
    Ensemble,
    Manifest,
    ShardUnlearning,
    TrainingRecord,
    VersionManifest,
    membership_p_values,
    unlearn_shard,
    verify_bit_exact,
)
from service.core.config import Settings, get_settings
from service.core.skip import Skip
from service.core.storage import artifact_store
from service.core.subject_keys import PayloadReader
from service.db.enums import ActionStatus, JobKind, JobStatus
from service.db.tables import Job, MlModel
from service.erasure.retrain_outcomes import (
    Exactness,
    ExactnessResult,
    MembershipEvidence,
    MembershipNotComputed,
    PublishedRetrain,
    ShardRetrainOutcome,
)
from service.exact.snapshot import (
    ModelSnapshot,
    load_ensemble,
    load_model_snapshot,
    load_pending_erasure,
    load_retained,
    stack_x,
)
from service.jobs import lifecycle as jobs
from service.registry.service import current_version

# Marks a shard's job whose destroy and certify stages ran (``unfinished``: those that did not).
CLOSED = "closed"

# Evaluating against the served version can lose a race with another shard's publish (which
# destroys the checkpoints it replaced) this many times before the retrain gives up.
EVALUATION_ATTEMPTS = 5


@dataclass(frozen=True)
class RetrainInputs:
    job_id: uuid.UUID
    shard: int
    snapshot: ModelSnapshot
    retained: list[TrainingRecord]
    pending: list[TrainingRecord]
    """Rows claimed by a request but not purged yet: what the served shard still holds."""


def load_retrain(
    session: Session, job_id: uuid.UUID
) -> RetrainInputs | PublishedRetrain[ShardRetrainOutcome] | Skip:
    """Claim the job and read what it needs (``Skip.not_claimed``: not ours to run; unfinished:
    published, its destroy and certify stages left). Raises IntegrityError when another retrain
    of the shard is running (the caller retries)."""
    job = jobs.claim(session, job_id)
    if job is None:
        done = session.get(Job, job_id)
        left = _unfinished(session, done) if done is not None else None
        return Skip.not_claimed if left is None else left
    assert job.shard is not None
    model = session.get_one(MlModel, job.model_id)
    reader = PayloadReader(get_settings())  # one for the three reads: each bundle opened once
    snapshot = load_model_snapshot(session, model, reader)
    spec, base = snapshot.spec, snapshot.base
    return RetrainInputs(
        job_id=job_id,
        shard=job.shard,
        snapshot=snapshot,
        retained=load_retained(session, model.id, spec, job.shard, base, reader),
        # Raw features (not through the base): only keys and membership evidence use them.
        pending=load_pending_erasure(session, model.id, spec, job.shard, reader=reader),
    )


def should_verify(snapshot: ModelSnapshot, job_id: uuid.UUID) -> bool:
    policy = snapshot.policy
    if policy.verify_exact == "always":
        return True
    if policy.verify_exact == "never":
        return False
    # Sampled: decided by the job id so that a redelivery makes the same choice.
    bucket = int(hashlib.sha256(job_id.bytes).hexdigest()[:8], 16) % 10_000
    return bucket < policy.verify_sample_rate * 10_000


def served_finals(session: Session, model_id: uuid.UUID) -> Manifest:
    """The final checkpoint of each shard in the version the model serves now."""
    model = session.get_one(MlModel, model_id)
    version = current_version(session, model)
    if version is None:
        raise ValueError("the model has no trained version")
    return VersionManifest.from_json(version.manifest).finals


def retrain(
    settings: Settings,
    inputs: RetrainInputs,
    progress: Callable[[float], None],
    served: Callable[[], Manifest] | None = None,
) -> ShardRetrainOutcome:
    """Retrain the shard without the erased rows; the figures for its certificate.

    ``served`` reads the other shards' checkpoints as served now (default: as when the job was
    loaded). With several ML workers another shard's retrain may publish meanwhile and destroy
    the checkpoints it replaced; this retrain is published onto that newer version, so its
    accuracy and membership figures are computed on it too."""
    snapshot, shard = inputs.snapshot, inputs.shard
    if snapshot.manifest is None or snapshot.version_number is None:
        raise ValueError("the model has no trained version to retrain")
    store = artifact_store(settings)
    verify = should_verify(snapshot, inputs.job_id)
    unlearned = _unlearn(inputs, snapshot.manifest, store, progress, 0.5 if verify else 0.9)
    exactness = Exactness(ExactnessResult.not_run, snapshot.policy.verify_exact)
    if verify:
        exactness = _check_exactness(inputs, unlearned.checkpoint_after, store)
    progress(0.95)
    loaded = snapshot.manifest.finals
    before, after = _ensembles(
        snapshot, shard, unlearned.checkpoint_after, store, served or (lambda: loaded)
    )
    accuracy_before = _holdout_accuracy(before, snapshot)
    accuracy_after = _holdout_accuracy(after, snapshot)
    training = unlearned.training
    return ShardRetrainOutcome(
        shard=shard,
        version_before=snapshot.version_number,
        checkpoint_before=unlearned.checkpoint_before,
        checkpoint_after=unlearned.checkpoint_after,
        first_affected_slice=unlearned.first_affected_slice,
        slices_total=snapshot.config.slices,
        slices_retrained=unlearned.slices_retrained,
        retained_records=len(inputs.retained),
        lineage_hash=unlearned.lineage_hash,
        retrain_seconds=round(training.seconds, 4),
        exactness=exactness,
        membership=_membership(after, snapshot, inputs.pending),
        accuracy_before=accuracy_before,
        accuracy_after=accuracy_after,
        validation_accuracy=training.validation_accuracy,
        majority_accuracy=training.majority_accuracy,
        epochs_by_slice=tuple(training.epochs_by_slice),
        too_small=training.too_small,
        public_base=snapshot.config.base_hash or None,
        superseded_checkpoints=tuple(unlearned.superseded_checkpoints),
        checkpoint_ids=tuple(training.checkpoint_ids),
    )


def _unlearn(
    inputs: RetrainInputs,
    manifest: VersionManifest,
    store: ArtifactStore,
    progress: Callable[[float], None],
    span: float,
) -> ShardUnlearning:
    """Retrain from the checkpoint before the first slice holding a pending row (``span``: the
    share of the job's progress it reports)."""
    return unlearn_shard(
        inputs.snapshot.config,
        inputs.shard,
        inputs.retained,
        [r.key for r in inputs.pending],
        manifest.slices[inputs.shard],
        store,
        progress=lambda done, total: progress(span * done / total if total else span),
    )


def _check_exactness(inputs: RetrainInputs, checkpoint: str, store: ArtifactStore) -> Exactness:
    """Train the shard from scratch on the retained rows and compare, tensor by tensor."""
    snapshot = inputs.snapshot
    check = verify_bit_exact(snapshot.config, inputs.shard, inputs.retained, checkpoint, store)
    return Exactness(
        status=ExactnessResult.of(check.bit_exact),
        policy=snapshot.policy.verify_exact,
        tensors_compared=check.tensors_compared,
        mismatched_tensors=tuple(check.mismatched),
        seconds=round(check.seconds, 4),
    )


def _ensembles(
    snapshot: ModelSnapshot,
    shard: int,
    checkpoint: str,
    store: ArtifactStore,
    read_served: Callable[[], Manifest],
) -> tuple[Ensemble, Ensemble]:
    """The served model before and after this shard's retrain, on the version served now: read
    again when another shard's publish destroyed a checkpoint meanwhile."""

    def load() -> tuple[Ensemble, Ensemble]:
        old = read_served()
        before = load_ensemble(snapshot, old, store)
        return before, load_ensemble(snapshot, old.replace({shard: checkpoint}), store)

    for _ in range(EVALUATION_ATTEMPTS - 1):
        try:
            return load()
        except ArtifactNotFound:
            continue
    return load()  # the last attempt lets ArtifactNotFound through


def _holdout_accuracy(ensemble: Ensemble, snapshot: ModelSnapshot) -> float | None:
    if not len(snapshot.holdout_y):
        return None
    return float(ensemble.accuracy(snapshot.holdout_x, snapshot.holdout_y))


def _membership(
    after: Ensemble, snapshot: ModelSnapshot, pending: list[TrainingRecord]
) -> MembershipEvidence | MembershipNotComputed:
    if not len(snapshot.holdout_y) or not pending:
        return MembershipNotComputed(reason="no held-out records")
    x = stack_x(pending, snapshot.spec.input_dim)
    y = np.array([r.y for r in pending], dtype=np.int64)
    p = membership_p_values(after, x, y, snapshot.holdout_x, snapshot.holdout_y)
    return MembershipEvidence(
        erased_records=len(p),
        non_members=len(snapshot.holdout_y),
        p_value_min=round(min(p), 6),
        p_value_median=round(statistics.median(p), 6),
    )


def _unfinished(session: Session, job: Job) -> PublishedRetrain[ShardRetrainOutcome] | None:
    """A retrain published but not certified (its task stopped in between) while an action
    still waits for it: its destroy and certify stages are left."""
    if job.status != JobStatus.done or job.kind != JobKind.retrain_shard or not job.result:
        return None
    if job.result.get(CLOSED):
        return None
    if not any(a.status == ActionStatus.running for a in jobs.actions_waiting_for(session, job.id)):
        return None
    return PublishedRetrain(job.id, job.model_id, ShardRetrainOutcome.from_json(job.result))
