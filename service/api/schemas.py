"""Request and response bodies. Inputs forbid unknown fields and bound every size."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from service.registry.config import (
    GenerativeConfig,
    GenerativePolicy,
    ModelConfigIn,
    ModelPolicy,
)

Name = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$")


def _iso_8601(value: Any) -> Any:
    # Pydantic also reads a bare number as a Unix time ("since=0.0"); the API states ISO 8601
    # date-times, so anything else is refused rather than guessed.
    return datetime.fromisoformat(value) if isinstance(value, str) else value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_8601)]


class StrictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FactIn(StrictIn):
    question: str | None = Field(None, max_length=500)
    answer: str = Field(min_length=1, max_length=2000)


class ForgetIn(StrictIn):
    """What generative models must stop revealing; stored encrypted, never echoed."""

    names: list[str] = Field(default_factory=list, max_length=20)
    aliases: list[str] = Field(default_factory=list, max_length=20)
    emails: list[str] = Field(default_factory=list, max_length=20)
    phones: list[str] = Field(default_factory=list, max_length=20)
    facts: list[FactIn] = Field(default_factory=list, max_length=200)


class VerifyIdentityIn(StrictIn):
    method: Literal[
        "id_document", "account_login", "email_confirmation", "knowledge_based", "representative"
    ]
    reference: str = Field(min_length=1, max_length=200)


_NOT_CONTROL = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
IDENTIFIER_PATTERN = f"^[^{_NOT_CONTROL}]*[^\\s{_NOT_CONTROL}][^{_NOT_CONTROL}]*$"


class FileRequestIn(StrictIn):
    subject_id: str = Field(
        min_length=1,
        max_length=256,
        # No control characters (a NUL byte, line breaks) or line separators, and not blank:
        # the same rule as service.erasure.identifiers, so the schema says what is refused.
        pattern=IDENTIFIER_PATTERN,
        description="raw subject identifier",
    )
    reason: str = Field(min_length=1, max_length=2000)
    # Model names as registered (so an unknown one can be named back without quoting input).
    scope: list[Annotated[str, Name]] | None = Field(
        None, min_length=1, max_length=50, description="model names; omit for every model"
    )
    forget: ForgetIn | None = None
    legal_ground: Literal["a", "b", "c", "d", "e", "f"] | None = Field(
        None, description="GDPR Art. 17(1) point"
    )
    identity_verification: VerifyIdentityIn | None = Field(
        None, description="how the requester's identity was checked, if it already was"
    )


class DecisionIn(StrictIn):
    reason: str = Field(min_length=1, max_length=2000)


RejectionCode = Literal[
    "identity_not_verified",
    "manifestly_unfounded",
    "freedom_of_expression",
    "legal_obligation",
    "public_interest_health",
    "archiving_research",
    "legal_claims",
    "no_data_held",
    "other",
]


class RejectIn(DecisionIn):
    code: RejectionCode | None = None


class ExtendIn(StrictIn):
    months: int = Field(ge=1, le=2)
    reason: str = Field(min_length=1, max_length=2000)


class ActionOut(BaseModel):
    model: str
    strategy: str
    status: str
    progress: float
    shards: list[int]
    error_code: str | None
    # Policy "both": when exact removal is due, and whether it is late (the rules stay active).
    exact_due_at: datetime | None = None
    exact_overdue: bool | None = None
    # Verifier rules: when the rules went into force while the action still waits for its
    # certificate (None otherwise; the certificate follows within the same worker run).
    rules_in_force_since: datetime | None = None
    # Failed tries at deleting the checkpoints its retrain superseded, while the action waits
    # for that deletion (it is retried until it works; 0 otherwise).
    deletion_failures: int = 0


class CertificateOut(BaseModel):
    model: str
    kind: str
    plain_words: str
    body: dict[str, Any]
    body_sha256: str
    audit_seq: int
    # True once a later certificate for the same model replaced it (both stay in the log).
    superseded: bool = False
    # The certificate shown is the one in the audit log; False: the certificates table (a
    # cache) differs from it, or the log holds no such certificate.
    matches_audit_log: bool = True


class RequestOut(BaseModel):
    id: uuid.UUID
    subject_ref: str
    status: str
    scope: list[str] | None
    received_at: datetime
    due_at: datetime
    overdue: bool
    decided_at: datetime | None
    decided_by: str | None
    started_at: datetime | None
    completed_at: datetime | None
    failure_code: str | None
    legal_ground: str | None = None
    identity_required: bool = False
    identity_verified_at: datetime | None = None
    rejection_code: str | None = None
    extended_months: int = 0
    # The short human handle (LR-<year>-<number>) and the DPO's own ticket reference.
    reference: str = ""
    ticket_ref: str | None = None
    # Once completed: "erased", or "no_data_held" (no model in scope held the subject).
    outcome: str | None = None
    # True when every certificate carries a guarantee; None before any certificate exists.
    certified: bool | None = None
    actions: list[ActionOut] = []
    # The current certificate per model; certificate_history has every one, oldest first.
    certificates: list[CertificateOut] = []
    certificate_history: list[CertificateOut] = []


class RequestList(BaseModel):
    items: list[RequestOut]
    total: int


class TimelineEvent(BaseModel):
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]
    hash: str


class ShardedModelIn(StrictIn):
    """A sharded classifier lethe trains (exact unlearning by slice retraining)."""

    name: str = Name
    kind: Literal["sharded_classifier"] = "sharded_classifier"
    config: ModelConfigIn
    policy: ModelPolicy = Field(default_factory=ModelPolicy)


class GenerativeModelIn(StrictIn):
    """A generative model lethe serves behind verifier rules (and fine-tunes, with finetune)."""

    name: str = Name
    kind: Literal["generative"]
    config: GenerativeConfig
    policy: GenerativePolicy = Field(default_factory=GenerativePolicy)


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", "sharded_classifier")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


# The kind chooses the config's and the policy's schema, so the API description states both
# (it used to say "any object", and the 422 came from a second validation it did not show).
RegisterModelIn = Annotated[
    Annotated[ShardedModelIn, Tag("sharded_classifier")]
    | Annotated[GenerativeModelIn, Tag("generative")],
    Discriminator(_kind_of),
]


class GenerateIn(StrictIn):
    prompt: str = Field(min_length=1, max_length=4000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_new_tokens: int | None = Field(None, ge=1, le=512)


class GenerateOut(BaseModel):
    model: str
    text: str
    # The model version whose weights answered (models lethe fine-tunes; None otherwise).
    model_version: int | None = None
    rule_set_version: int | None
    rounds_used: int
    refused: bool
    reason: str = Field(
        description="no_rules, accepted, accepted_after_feedback (regenerated), redacted "
        "(the sentences carrying a leak were dropped), subject_in_query, subject_in_answer (a "
        "flagged first answer, or a regenerated one, named a forgotten subject), early_exit or "
        "budget_exhausted (the last four are refusals)"
    )


class RuleSetOut(BaseModel):
    version: int
    status: str
    rule_count: int
    request_ids: list[str]
    calibration: dict[str, Any]
    activated_at: datetime | None
    superseded_at: datetime | None


class VersionOut(BaseModel):
    number: int
    cause: str
    manifest_hash: str
    created_at: datetime
    request_ids: list[str]
    metrics: dict[str, Any]
    purged: bool


class ModelOut(BaseModel):
    name: str
    kind: str
    status: str
    current_version: int | None
    config: dict[str, Any]
    policy: dict[str, Any]
    created_at: datetime


class IngestOut(BaseModel):
    records: int
    subjects: int
    train_records: int
    holdout_records: int
    classes: list[str]
    feature_columns: int
    # Expected retrain fraction of one request with and without placement (if configured).
    placement: dict[str, Any] | None = None


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    model: str
    shard: int | None
    status: str
    progress: float
    attempts: int
    error_code: str | None
    result: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


Cell = str | float | int | bool | None


class PredictIn(StrictIn):
    rows: list[dict[str, Cell]] = Field(min_length=1, max_length=1000)


class PredictOut(BaseModel):
    model: str
    version: int
    classes: list[str]
    predictions: list[str]
    probabilities: list[list[float]]


class TokenIn(StrictIn):
    # Letters, digits and . _ @ - only, starting with a letter or digit: no CR/LF (log lines),
    # no leading = + - @ (spreadsheet formulas in exports).
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    role: Literal["dpo", "ml_engineer", "auditor", "admin"]
    expires_in_days: int | None = Field(
        None,
        ge=1,
        le=3650,
        description="the token stops working after this many days (default 90)",
    )


class TokenOut(BaseModel):
    name: str
    role: str
    token: str
    expires_at: datetime | None = None


class TokenInfo(BaseModel):
    """A token as listed: never its secret (only a hash of it is stored)."""

    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    state: Literal["active", "expired", "revoked"]


Candidate = Annotated[
    tuple[Annotated[int, Field(ge=1, le=256)], Annotated[int, Field(ge=1, le=64)]],
    Field(description="(shards, slices)"),
]


class PlanIn(StrictIn):
    budget_points: float = Field(
        1.0, ge=0, le=50, allow_inf_nan=False, description="accuracy points below one model"
    )
    se_margin: float = Field(
        0.0, ge=0, le=5, allow_inf_nan=False, description="standard errors added to each gap"
    )
    erasure_rate: float = Field(
        0.001, gt=0, le=0.5, allow_inf_nan=False, description="share of records erased per retrain"
    )
    auto: bool = Field(False, description="apply the proposal if the model has not trained yet")
    max_records: int = Field(20_000, ge=50, le=200_000, description="subsample size")
    candidates: list[Candidate] | None = Field(None, min_length=1, max_length=16)


class PlanOut(BaseModel):
    model: str
    job_id: uuid.UUID | None
    job_status: str | None
    plan: dict[str, Any] | None
    orders: dict[str, Any] | None = Field(
        None,
        description="a model lethe fine-tunes: slice orders against their cost (checkpoint "
        "bytes and training seconds from its own training) and the slices kept on after an "
        "erasure of 1, 5 or 20 subjects",
    )


class ErrorInfo(BaseModel):
    code: str = Field(description="stable, machine-readable: what went wrong")
    message: str = Field(description="for people; never quotes the request's input")
    details: dict[str, Any] | list[dict[str, Any]] | None = Field(
        None, description="where and why (validation: location and reason per error)"
    )


class ErrorOut(BaseModel):
    """Every error the API answers, whatever its status."""

    error: ErrorInfo


# --------------------------------------------------------------------------- chat completions
# The OpenAI chat-completions shapes (the parts lethe serves), so that OpenAI clients work
# unchanged. Unknown fields are refused, as everywhere in the API.

ChatContent = Annotated[str, Field(max_length=16_000)]
StopString = Annotated[str, Field(min_length=1, max_length=64)]


class ChatTextPart(StrictIn):
    type: Literal["text"]
    text: ChatContent


class ChatMessageIn(StrictIn):
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="developer is read as system"
    )
    content: ChatContent | list[ChatTextPart] = Field(
        description="text, or a list of text parts (joined)"
    )
    name: str | None = Field(None, max_length=64, description="accepted and ignored")


class ChatStreamOptions(StrictIn):
    include_usage: bool = False


class ChatCompletionIn(StrictIn):
    model: str = Field(
        min_length=1, max_length=100, description="a registered generative model's name"
    )
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=100)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=20, description="answers, each screened on its own")
    seed: int | None = Field(
        None, ge=-(2**63), le=2**63 - 1, description="the same seed gives the same answers"
    )
    max_tokens: int | None = Field(None, ge=1, le=512)
    max_completion_tokens: int | None = Field(None, ge=1, le=512)
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = Field(
        None, description="up to 4 strings; the answer ends before the first one"
    )
    stream: bool = False
    stream_options: ChatStreamOptions | None = None
    logprobs: bool | None = Field(None, description="never available: only false is accepted")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="never available")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="only 0 is served")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="only 0 is served")
    user: str | None = Field(None, max_length=256, description="accepted, never stored")


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatGuardOut(BaseModel):
    """What the guard did to this answer (a lethe extension; OpenAI clients ignore it)."""

    refused: bool
    reason: str = Field(description="as GenerateOut.reason, plus withheld (streams)")
    rounds_used: int


class ChatChoiceOut(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length", "content_filter"]
    logprobs: None = None
    guard: ChatGuardOut


class ChatUsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatServedOut(BaseModel):
    model_version: int | None = Field(description="models lethe fine-tunes; None otherwise")
    rule_set_version: int | None


class ChatCompletionOut(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str = Field(
        description="the model and rule-set versions that answered: same seed, same "
        "fingerprint, same answers"
    )
    choices: list[ChatChoiceOut]
    usage: ChatUsageOut
    lethe: ChatServedOut
