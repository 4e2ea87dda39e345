"""Settings, read from the environment with the ``LETHE_`` prefix.

Secrets have development defaults so that ``make demo`` runs with nothing configured, and
``Settings`` refuses to start with those defaults outside development.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_KEY = "dev-only-secret-key-change-me"
# A valid Fernet key (32 url-safe base64 bytes) that is public by design: development only.
DEV_ENCRYPTION_KEY = "ZGV2LW9ubHktZW5jcnlwdGlvbi1rZXktMzJieXRlcyE="


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LETHE_", env_file=None, extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development", description="development and test allow the built-in dev secrets"
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL (postgresql+psycopg://...). Unset: an embedded PostgreSQL "
        "is started under data_dir.",
    )
    migration_database_url: str | None = Field(
        None,
        description="the owner's URL, used only by `lethe migrate`; when set, migrate also makes "
        "the login of database_url a member of lethe_runtime (SELECT and INSERT on the audit "
        "log, nothing more on it). Unset: migrations use database_url",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker (redis://, amqp://). Unset: the database through kombu's "
        "SQLAlchemy transport.",
    )
    result_backend: str | None = Field(None, description="Celery result backend; unset: the DB")
    data_dir: Path = Field(Path(".lethe"), description="embedded PostgreSQL data and artifacts")
    artifact_url: str | None = Field(
        None, description="artifact store: a folder or an fsspec URL; unset: data_dir/artifacts"
    )
    secret_key: str = Field(DEV_SECRET_KEY, description="HMAC key for subject references")
    encryption_key: str = Field(DEV_ENCRYPTION_KEY, description="Fernet key for stored content")
    key_encryption_keys: str | None = Field(
        None,
        description="key-encryption keys that wrap each request's data key: '<id>:<base64 of "
        "32 bytes>' separated by commas, the first wraps new keys (rotation: put a new one "
        "first); unset: one derived from the encryption key",
    )
    keystore_url: str | None = Field(
        None,
        description="where wrapped data keys live, outside the database (a folder or an "
        "fsspec URL shared by every host; one object per key, deleted to destroy it); unset: "
        "the artifact store (under keys/)",
    )
    key_cache_seconds: float = Field(
        5.0, ge=0, description="how long a process keeps an unwrapped data key in memory"
    )
    encrypt_records: bool = Field(
        True,
        description="seal each training record under a key of its data subject (off: stored "
        "in clear, only to measure what sealing costs)",
    )
    crypto_shredding: bool = Field(
        True,
        description="destroy a request's keys once its retention ends (off: kept for ever; "
        "only for tests that show what shredding removes)",
    )
    shred_interval_seconds: float = Field(
        60.0, gt=0, description="how often the periodic job destroys the keys that are due"
    )
    retention_completed_days: float = Field(
        7.0,
        ge=0,
        description="days a completed request's personal data is kept after it ends (and its "
        "rules are no longer served), for the DPO's follow-up; 0: destroyed as it ends",
    )
    retention_rejected_days: float = Field(
        30.0, ge=0, description="days a rejected (or failed) request's personal data is kept"
    )
    retention_cancelled_days: float = Field(
        30.0, ge=0, description="days a cancelled request's personal data is kept"
    )
    host_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="this host's id in the list of hosts that hold local copies of fine-tuned "
        "weights; unset: made once and kept in data_dir/host-id",
    )
    host_heartbeat_seconds: float = Field(
        30.0,
        ge=0,
        description="how often a host says it is alive and drops the local copies of erased "
        "versions (0: only when it serves or works)",
    )
    host_absent_after_seconds: float = Field(
        900.0,
        gt=0,
        description="a host silent this long is marked absent: its unconfirmed deletions are "
        "recorded as such on the certificate",
    )
    deadline_days: int = Field(30, ge=1, le=90, description="GDPR Art. 12(3): one month")
    auto_approve: bool = Field(False, description="approve requests on filing")
    batching_window_seconds: float = Field(
        0.0, ge=0, description="delay before a shard retrain starts, to coalesce requests"
    )
    max_upload_bytes: int = Field(50 * 1024 * 1024, description="largest accepted CSV upload")
    max_request_body_bytes: int = Field(64 * 1024, description="largest JSON body accepted")
    stale_job_seconds: int = Field(
        600, ge=10, description="a running job without heartbeat this long is reaped"
    )
    max_job_attempts: int = Field(3, ge=1)
    reaper_interval_seconds: float = Field(15.0, gt=0)
    redispatch_seconds: float = Field(
        15.0, ge=1, description="re-send pending jobs and approved requests unclaimed this long"
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one object per line (time, level, logger, request id)"
    )
    api_max_inflight: int = Field(
        8, ge=1, description="requests holding a database connection at once (below the pool)"
    )
    api_max_queued: int = Field(
        2000, ge=0, description="requests waiting for a slot; beyond it: 503 at once"
    )
    api_queue_timeout_seconds: float = Field(
        30.0, gt=0, description="longest wait for a slot before a 503 with Retry-After"
    )
    audit_signing_key: str | None = Field(
        None,
        description="Ed25519 private key (base64 of 32 raw bytes, or PEM) that signs audit "
        "checkpoints; never stored in the database. Production: this or the key file.",
    )
    audit_signing_key_file: Path | None = Field(
        None, description="file holding the checkpoint signing key (base64 or PEM)"
    )
    audit_checkpoint_url: str | None = Field(
        None,
        description="where signed checkpoints are kept (a folder or fsspec URL the database "
        "admin cannot write); unset: data_dir. Production: required. An s3:// URL is written "
        "with Object Lock retention (the bucket must have Object Lock enabled).",
    )
    audit_checkpoint_retention_days: int = Field(
        3650,
        ge=1,
        description="Object Lock retention (COMPLIANCE mode) of each checkpoint on an S3 store",
    )
    audit_mac_keys: str | None = Field(
        None,
        description="keys that authenticate audit events (HMAC-SHA256), never stored in the "
        "database: 'kid=base64,kid=base64', newest last (it signs; all verify). Production: "
        "this or the key file.",
    )
    audit_legacy_through: int = Field(
        0,
        ge=0,
        description="after upgrading to authenticated events: the last sequence written "
        "before (those rows have no MAC; the chain and checkpoints still cover them)",
    )
    audit_mac_key_file: Path | None = Field(
        None, description="file of audit event keys, one 'kid base64' per line, newest last"
    )
    physical_deletion: Literal["vacuum", "vacuum_full"] = Field(
        "vacuum",
        description="after erased rows are purged: VACUUM (dead row versions removed, their "
        "bytes may stay in page free space until overwritten; no lock on readers or writers) "
        "or VACUUM FULL (table rewritten, old pages dropped; takes an exclusive lock on the "
        "table for the rewrite)",
    )
    backup_retention_days: int | None = Field(
        None,
        ge=0,
        description="how long this deployment keeps database backups and archived WAL (lethe "
        "does not control them); stated in certificates; unset: stated as unknown",
    )
    metrics_token: str | None = Field(
        None,
        description="bearer token a Prometheus scraper presents on /metrics (its own, not an "
        "API token); unset: /metrics answers 404 unless metrics_public",
    )
    metrics_public: bool = Field(
        False, description="serve /metrics without a token (only behind a private network)"
    )
    console_session_minutes: int = Field(
        30, ge=1, le=24 * 60, description="console sessions end after this long without use"
    )
    console_session_max_hours: int = Field(
        12, ge=1, le=24 * 7, description="console sessions end this long after sign-in"
    )
    console_cookie_secure: bool | None = Field(
        None, description="Secure flag of the console's cookies; unset: on outside development"
    )

    @property
    def secure_cookies(self) -> bool:
        if self.console_cookie_secure is not None:
            return self.console_cookie_secure
        return self.environment != "development"

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.environment == "production":
            if self.secret_key == DEV_SECRET_KEY:
                raise ValueError("LETHE_SECRET_KEY must be set outside development")
            if self.encryption_key == DEV_ENCRYPTION_KEY:
                raise ValueError("LETHE_ENCRYPTION_KEY must be set outside development")
            if self.database_url is None:
                raise ValueError("LETHE_DATABASE_URL must be set in production")
            if self.console_cookie_secure is False:
                # A session cookie sent over plain HTTP can be read on the network.
                raise ValueError("LETHE_CONSOLE_COOKIE_SECURE cannot be false in production")
            if not self.audit_signing_key and self.audit_signing_key_file is None:
                raise ValueError(
                    "LETHE_AUDIT_SIGNING_KEY or LETHE_AUDIT_SIGNING_KEY_FILE must be set in "
                    "production"
                )
            if not self.audit_mac_keys and self.audit_mac_key_file is None:
                raise ValueError(
                    "LETHE_AUDIT_MAC_KEYS or LETHE_AUDIT_MAC_KEY_FILE must be set in production"
                )
            if not self.audit_checkpoint_url:
                raise ValueError(
                    "LETHE_AUDIT_CHECKPOINT_URL must be set in production (a folder or bucket "
                    "out of the database host's reach)"
                )
        return self

    @property
    def artifact_location(self) -> str:
        return self.artifact_url or str((self.data_dir / "artifacts").resolve())


@lru_cache
def get_settings() -> Settings:
    return Settings()
