"""The schema: Alembic's single source (see migrations/)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.base import Base, CreatedAt, UUIDPrimaryKey, utcnow
from service.db.enums import (
    ActionStatus,
    CalibrationKind,
    CertificateKind,
    EnumString,
    HostPurgeStatus,
    JobKind,
    JobStatus,
    ModelKind,
    ModelStatus,
    NoteKind,
    RecordSplit,
    RequestOutcome,
    RequestStatus,
    Role,
    RuleSetStatus,
    Strategy,
    VersionCause,
    check_in,
)

JSON = dict[str, Any]


class ApiToken(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(check_in("role", Role), name="role"),)

    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[Role] = mapped_column(EnumString(Role, 20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class DataSubject(CreatedAt, Base):
    """A data subject, known only by the keyed hash of an identifier."""

    __tablename__ = "data_subjects"

    subject_ref: Mapped[str] = mapped_column(String(64), primary_key=True)


class MlModel(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "ml_models"
    __table_args__ = (
        CheckConstraint(check_in("kind", ModelKind), name="kind"),
        CheckConstraint(check_in("status", ModelStatus), name="status"),
    )

    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[ModelKind] = mapped_column(EnumString(ModelKind, 40))
    status: Mapped[ModelStatus] = mapped_column(
        EnumString(ModelStatus, 20), default=ModelStatus.registered
    )
    # Training configuration (SISA config, feature spec, label classes): never personal data.
    config: Mapped[JSON] = mapped_column(JSONB)
    policy: Mapped[JSON] = mapped_column(JSONB)
    current_version: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(100))

    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model", lazy="raise")


class ModelVersion(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number"),)

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id"))
    number: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[JSON] = mapped_column(JSONB)
    manifest_hash: Mapped[str] = mapped_column(String(64))
    cause: Mapped[VersionCause] = mapped_column(EnumString(VersionCause, 40))
    request_ids: Mapped[list[str]] = mapped_column(JSONB, default=list)
    metrics: Mapped[JSON] = mapped_column(JSONB, default=dict)
    # Set when a later erasure deleted checkpoints this version needs: it can no longer load.
    purged_at: Mapped[datetime | None]

    model: Mapped[MlModel] = relationship(back_populates="versions", lazy="raise")


class TrainingRecord(Base):
    """One training row of a model lethe trains, and where SISA placed it."""

    __tablename__ = "training_records"
    __table_args__ = (
        UniqueConstraint("model_id", "record_key"),
        CheckConstraint(check_in("split", RecordSplit), name="split"),
        Index("ix_training_records_model_shard", "model_id", "shard"),
        Index("ix_training_records_model_subject", "model_id", "subject_ref"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id"))
    record_key: Mapped[str] = mapped_column(String(64))
    subject_ref: Mapped[str] = mapped_column(ForeignKey("data_subjects.subject_ref"))
    shard: Mapped[int] = mapped_column(Integer)
    slice: Mapped[int] = mapped_column(Integer)
    split: Mapped[RecordSplit] = mapped_column(EnumString(RecordSplit, 10))
    # The row itself; set to NULL once the record is erased.
    payload: Mapped[JSON | None] = mapped_column(JSONB)
    label: Mapped[int | None] = mapped_column(Integer)
    # Flagged at ingestion as likely to be erased (placement: the last slices); fixed for good.
    likely_erased: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    erasure_request_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("erasure_requests.id"), index=True
    )
    erased_at: Mapped[datetime | None]


# Numbers the human reference of each request (LR-<year>-<number>): unique, never reused.
REQUEST_NUMBER = Sequence("erasure_request_number")


class ErasureRequest(UUIDPrimaryKey, Base):
    __tablename__ = "erasure_requests"
    __table_args__ = (
        CheckConstraint(check_in("status", RequestStatus), name="status"),
        CheckConstraint(check_in("outcome", RequestOutcome), name="outcome"),
    )

    subject_ref: Mapped[str] = mapped_column(ForeignKey("data_subjects.subject_ref"), index=True)
    # None: every model; otherwise a list of model names.
    scope: Mapped[list[str] | None] = mapped_column(JSONB)
    # Written before per-request keys only; the reason is now kept in ``reason_encrypted``.
    reason: Mapped[str | None] = mapped_column(Text)
    # The reason given at filing, sealed under the request's data key.
    reason_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Facts to forget (for generative models), sealed under the request's data key.
    forget_content: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The id of the request's data key in the key store (service.core.keys); None: filed before
    # per-request keys (sealed under the service key).
    key_id: Mapped[str | None] = mapped_column(String(80))
    # When the request's data key was destroyed (service.erasure.shredding).
    keys_destroyed_at: Mapped[datetime | None] = mapped_column(index=True)
    status: Mapped[RequestStatus] = mapped_column(
        EnumString(RequestStatus, 20), default=RequestStatus.received, index=True
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    payload_hash: Mapped[str] = mapped_column(String(64))
    filed_by: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(100))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failure_code: Mapped[str | None] = mapped_column(String(80))
    # GDPR Art. 17(1) point (a)-(f); None for requests filed before it was recorded.
    legal_ground: Mapped[str | None] = mapped_column(String(1))
    # When set, the request cannot be approved until the requester's identity is verified.
    identity_required: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    identity_method: Mapped[str | None] = mapped_column(String(40))
    identity_reference: Mapped[str | None] = mapped_column(String(200))
    identity_verified_at: Mapped[datetime | None]
    identity_verified_by: Mapped[str | None] = mapped_column(String(100))
    rejection_code: Mapped[str | None] = mapped_column(String(40))
    # Months added to due_at under Art. 12(3) (at most two).
    extended_months: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The short human handle (shown as LR-<year of receipt>-<number>, 5 digits at least).
    number: Mapped[int] = mapped_column(BigInteger, REQUEST_NUMBER, unique=True)
    # The DPO's own ticket or case reference in another system (not personal data by design).
    ticket_ref: Mapped[str | None] = mapped_column(String(100), index=True)
    # Set when the request completes: erased, or no model in scope held the subject.
    outcome: Mapped[RequestOutcome | None] = mapped_column(EnumString(RequestOutcome, 20))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    actions: Mapped[list[RequestAction]] = relationship(back_populates="request", lazy="raise")


class RequestNote(UUIDPrimaryKey, CreatedAt, Base):
    """A DPO's own words on a request (a case number, a note, a reason), encrypted; the audit
    event it belongs to keeps only a keyed hash of the text (service.erasure.notes)."""

    __tablename__ = "request_notes"
    __table_args__ = (CheckConstraint(check_in("kind", NoteKind), name="kind"),)

    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("erasure_requests.id"), index=True)
    kind: Mapped[NoteKind] = mapped_column(EnumString(NoteKind, 30))
    text_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    author: Mapped[str] = mapped_column(String(100))
    audit_seq: Mapped[int] = mapped_column(BigInteger)


class RequestAction(UUIDPrimaryKey, CreatedAt, Base):
    """What one request does to one model; completes when all its jobs have."""

    __tablename__ = "request_actions"
    __table_args__ = (
        # Policy "both": one request, one model, two actions (rules now, exact removal later).
        UniqueConstraint("request_id", "model_id", "strategy"),
        CheckConstraint(check_in("strategy", Strategy), name="strategy"),
        CheckConstraint(check_in("status", ActionStatus), name="status"),
    )

    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("erasure_requests.id"))
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id"))
    strategy: Mapped[Strategy] = mapped_column(EnumString(Strategy, 40))
    status: Mapped[ActionStatus] = mapped_column(
        EnumString(ActionStatus, 20), default=ActionStatus.pending
    )
    detail: Mapped[JSON] = mapped_column(JSONB, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(80))
    finished_at: Mapped[datetime | None]

    request: Mapped[ErasureRequest] = relationship(back_populates="actions", lazy="raise")


class Job(UUIDPrimaryKey, CreatedAt, Base):
    """A unit of ML work run by the ``ml`` queue: a full training or one shard retrain."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(check_in("kind", JobKind), name="kind"),
        CheckConstraint(check_in("status", JobStatus), name="status"),
        # One running retrain per shard: a second one would publish a stale shard.
        Index(
            "uq_jobs_one_running_per_shard",
            "model_id",
            "shard",
            unique=True,
            postgresql_where=text("status = 'running'"),
        ),
    )

    kind: Mapped[JobKind] = mapped_column(EnumString(JobKind, 20))
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id"), index=True)
    # None for a job about the whole model (JobKind.train).
    shard: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[JobStatus] = mapped_column(
        EnumString(JobStatus, 20), default=JobStatus.pending, index=True
    )
    progress: Mapped[float] = mapped_column(default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[JSON] = mapped_column(JSONB, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(80))
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ActionJob(Base):
    """Which jobs an action waits for; one job can serve several actions (coalescing)."""

    __tablename__ = "action_jobs"

    action_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("request_actions.id"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id"), primary_key=True, index=True)


class Resend(Base):
    """The reaper's re-sends of one task for one target (a job, an action, a request): a message
    the broker still holds must not be duplicated every reaper pass while a long task runs, so
    re-sends back off (service.queue.resends)."""

    __tablename__ = "resends"

    task: Mapped[str] = mapped_column(String(80), primary_key=True)
    target_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    sends: Mapped[int]
    last_sent_at: Mapped[datetime] = mapped_column(index=True)


class AuditEvent(Base):
    """Append-only, hash-chained: hash = sha256(prev_hash || canonical(row)); mac authenticates
    the hash under a key the database never holds (service.audit.keys). Rows written before
    event keys existed have no mac and fail verification as unauthenticated."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(80), index=True)
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(80), index=True)
    request_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    details: Mapped[JSON] = mapped_column(JSONB)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    mac: Mapped[str | None] = mapped_column(String(120))


class Certificate(UUIDPrimaryKey, CreatedAt, Base):
    """What lethe claims for one (request, model). A later certificate may supersede an
    earlier one (an interim guarantee replaced once calibration or exact removal is done);
    both stay, here and in the audit log, and exactly one per pair is current."""

    __tablename__ = "certificates"
    __table_args__ = (
        CheckConstraint(check_in("kind", CertificateKind), name="kind"),
        Index(
            "uq_certificates_one_current",
            "request_id",
            "model_id",
            unique=True,
            postgresql_where=text("superseded_at IS NULL"),
        ),
        Index("ix_certificates_request_id", "request_id"),
    )

    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("erasure_requests.id"))
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id"))
    action_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("request_actions.id"))
    kind: Mapped[CertificateKind] = mapped_column(EnumString(CertificateKind, 30))
    body: Mapped[JSON] = mapped_column(JSONB)
    body_hash: Mapped[str] = mapped_column(String(64))
    audit_seq: Mapped[int] = mapped_column(BigInteger)
    supersedes_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("certificates.id"))
    superseded_at: Mapped[datetime | None]


class RuleSetVersion(UUIDPrimaryKey, CreatedAt, Base):
    """An immutable version of a generative model's verifier rules; one is active per model.

    Activating a version flips the old active row to superseded and inserts the new one in one
    transaction, so a generation reads either the old or the new version, never a mix.
    """

    __tablename__ = "rule_set_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        CheckConstraint(check_in("status", RuleSetStatus), name="status"),
        Index(
            "uq_rule_set_versions_one_active",
            "model_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
    )

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[RuleSetStatus] = mapped_column(EnumString(RuleSetStatus, 20))
    # Fernet-encrypted JSON: the per-request rule sets (names and facts are personal data).
    rules_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    rule_count: Mapped[int] = mapped_column(Integer)
    request_ids: Mapped[list[str]] = mapped_column(JSONB, default=list)
    # λ, B and their calibration figures: numbers only, no text of any probe or response.
    calibration: Mapped[JSON] = mapped_column(JSONB)
    activated_at: Mapped[datetime | None]
    superseded_at: Mapped[datetime | None]


class CalibrationRecord(Base):
    """One calibration observation of a rule-set version: a score or a round count, no text."""

    __tablename__ = "calibration_records"
    __table_args__ = (CheckConstraint(check_in("kind", CalibrationKind), name="kind"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    rule_set_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rule_set_versions.id"), index=True)
    kind: Mapped[CalibrationKind] = mapped_column(EnumString(CalibrationKind, 30))
    source: Mapped[str] = mapped_column(String(40))
    # NULL rounds mean "not accepted within the budget tried" (infinity).
    value: Mapped[float | None]


class ConsoleUser(UUIDPrimaryKey, CreatedAt, Base):
    """A person who signs in to the console; the password is stored as an argon2 hash."""

    __tablename__ = "console_users"
    __table_args__ = (CheckConstraint(check_in("role", Role), name="role"),)

    email: Mapped[str] = mapped_column(String(254), unique=True)
    # How the console names this person in timelines and reports (never the e-mail address).
    display_name: Mapped[str] = mapped_column(String(100), server_default="")
    role: Mapped[Role] = mapped_column(EnumString(Role, 20))
    password_hash: Mapped[str] = mapped_column(String(200))
    disabled_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(100))
    password_changed_at: Mapped[datetime | None]
    # TOTP second factor: the secret encrypted; on once confirmed with a code. The last time
    # step accepted is kept so that a code cannot be replayed within its window.
    totp_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    totp_enabled_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Keyed hashes of the unused one-time recovery codes.
    recovery_code_hashes: Mapped[list[str]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )


class ConsoleSession(UUIDPrimaryKey, CreatedAt, Base):
    """A signed-in browser: only the SHA-256 of the cookie's token is stored."""

    __tablename__ = "console_sessions"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("console_users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    # Password accepted, second factor not yet: the session opens nothing but the code page.
    needs_second_factor: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Shown on the account page's session list (a browser's own description, trimmed).
    user_agent: Mapped[str] = mapped_column(String(200), server_default="")


class ConsoleInvite(UUIDPrimaryKey, CreatedAt, Base):
    """A one-time link that lets its holder create an account (the first admin's way in)."""

    __tablename__ = "console_invites"
    __table_args__ = (CheckConstraint(check_in("role", Role), name="role"),)

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(EnumString(Role, 20))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # The account the invite is for (None: the first admin, who chooses an address).
    email: Mapped[str | None] = mapped_column(String(254))
    display_name: Mapped[str] = mapped_column(String(100), server_default="")
    created_by: Mapped[str] = mapped_column(String(100), server_default="")
    # The first admin's link: dead once any active admin exists.
    first_admin: Mapped[bool] = mapped_column(default=False, server_default=false())


class SignInThrottle(Base):
    """Failed sign-ins per account and per address (keyed hashes, never the e-mail or the IP),
    and the lockout they earned; evaluated before any password is checked."""

    __tablename__ = "signin_throttle"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]


class ConsoleDraft(UUIDPrimaryKey, CreatedAt, Base):
    """What a DPO typed into the filing form, encrypted, kept a day: shown again after a
    validation error, an expired session (re-auth) or Back."""

    __tablename__ = "console_drafts"
    __table_args__ = (UniqueConstraint("user_id", "form_key"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("console_users.id"), index=True)
    form_key: Mapped[str] = mapped_column(String(64))
    content_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Host(Base):
    """A process with its own data folder (an API server or a worker) that can hold local
    copies of fine-tuned weights: it registers and heartbeats so that an erasure knows whom to
    ask to delete them (service.erasure.host_purges). Its id is random: no personal data."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class HostPurge(UUIDPrimaryKey, CreatedAt, Base):
    """One host's deletion of its local copies of erased checkpoints: what to drop (content
    addresses only), for which requests, and whether the host confirmed it."""

    __tablename__ = "host_purges"
    __table_args__ = (
        CheckConstraint(check_in("status", HostPurgeStatus), name="status"),
        Index("ix_host_purges_pending", "host_id", postgresql_where=text("status = 'pending'")),
    )

    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"))
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id"), index=True)
    request_ids: Mapped[list[str]] = mapped_column(JSONB, default=list)
    checkpoints: Mapped[list[str]] = mapped_column(JSONB)
    status: Mapped[HostPurgeStatus] = mapped_column(
        EnumString(HostPurgeStatus, 20), default=HostPurgeStatus.pending
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None]
    settled_at: Mapped[datetime | None]
    # What the host found and deleted: checkpoint, folder name, sha256 of its weights.
    dropped: Mapped[list[JSON]] = mapped_column(JSONB, default=list)
