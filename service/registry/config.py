"""A registered model's configuration and policy, validated at the API edge."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# A hidden layer's width: positive and small enough to allocate (2^31 weights would not be).
Hidden = Annotated[int, Field(ge=1, le=4096)]


def _local_path(value: str) -> str:
    """A path the OS can look up: no NUL byte, no component longer than a file name may be."""
    if "\x00" in value or any(len(part.encode()) > 255 for part in value.split("/")):
        raise ValueError("not a usable path")
    return value


LocalPath = Annotated[str, AfterValidator(_local_path)]


class SisaSettings(BaseModel):
    """The SISA training knobs, with the library's converging defaults (``SisaConfig``).

    ``validation_fraction > 0`` (the default) trains each slice with early stopping on a
    keyed-hash validation part of the shard's own retained records (at most ``max_rounds``
    rounds, stopping after ``patience`` rounds without improvement); 0 trains ``epochs``
    fixed epochs instead (the v1 schedule). ``tail_slices`` is set by ``placement``.
    """

    model_config = ConfigDict(extra="forbid")

    # None: chosen at ingestion from the training records (models.sisa.default_shards: one
    # shard per 500 records, at most 16), so a small table is not cut into shards too small to
    # learn from; the chosen number is written back here. 8 slices: models.sisa.DEFAULT_SLICES.
    shards: int | None = Field(
        None, ge=1, le=256, description="default: one per 500 training records, at most 16"
    )
    slices: int = Field(8, ge=1, le=64)
    epochs: int = Field(20, ge=1, le=500, description="fixed schedule only")
    hidden: list[Hidden] = Field(default_factory=lambda: [64, 32], min_length=1, max_length=4)
    learning_rate: float = Field(3e-3, gt=0, le=1, allow_inf_nan=False)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    validation_fraction: float = Field(0.15, ge=0, le=0.4, allow_inf_nan=False)
    patience: int = Field(5, ge=1, le=100)
    max_rounds: int = Field(60, ge=1, le=1000)
    aggregation: Literal["uniform", "validation"] = Field(
        "uniform", description="validation: weight each shard by its own validation accuracy"
    )


class PlacementSettings(BaseModel):
    """ARCANE-style placement: records of subjects likely to be erased go to the last slices.

    ``flag_column``: a truthy value (1, true, yes, y) in any of a subject's rows flags the
    subject. ``recency_column``: the subjects with the largest values (numbers, or ISO dates)
    in the top ``recent_fraction`` are flagged. The column is a placement hint, not a feature.
    """

    model_config = ConfigDict(extra="forbid")

    flag_column: str | None = Field(None, min_length=1, max_length=100)
    recency_column: str | None = Field(None, min_length=1, max_length=100)
    recent_fraction: float = Field(0.1, gt=0, lt=1, allow_inf_nan=False)
    tail_slices: int = Field(1, ge=1, le=63)
    flagged_erasure_odds: float = Field(
        10.0,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="how much likelier a flagged "
        "subject is to be erased than another (your estimate)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PlacementSettings:
        if (self.flag_column is None) == (self.recency_column is None):
            raise ValueError("give exactly one of flag_column and recency_column")
        return self

    @property
    def column(self) -> str:
        return self.flag_column or self.recency_column or ""


class ModelPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # When the bit-exact check (a from-scratch retrain of the shard) runs in production.
    verify_exact: Literal["always", "sampled", "never"] = "always"
    verify_sample_rate: float = Field(0.1, ge=0, le=1)


class PublicBaseSettings(BaseModel):
    """A frozen public feature extractor under the per-shard heads (models.sisa.public_base):
    a TorchScript file, identified by its content hash, that holds no subject data."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=1000, description="local TorchScript file")
    content_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str = Field(min_length=1, max_length=100)
    provenance: str = Field(min_length=1, max_length=500, description="where the weights come from")
    holds_subject_data: Literal[False] = Field(
        description="attestation: the base was trained on no data subject's records"
    )


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_column: str = Field(min_length=1, max_length=100)
    label_column: str = Field(min_length=1, max_length=100)
    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    sisa: SisaSettings = Field(default_factory=SisaSettings)
    placement: PlacementSettings | None = None
    # Thermometer knots for numeric columns (models.tabular; 0: none, the v1 encoding).
    knot_spacing: float = Field(1.0, ge=0, le=14, allow_inf_nan=False)
    public_base: PublicBaseSettings | None = None
    # Filled at ingestion: column types, label classes, the full SISA config, and the expected
    # retrain fraction with and without placement.
    feature_spec: dict[str, Any] | None = None
    classes: list[str] | None = None
    sisa_config: dict[str, Any] | None = None
    placement_report: dict[str, Any] | None = None
    # Filled by a plan job (service.exact.sisa_plan): the (S, R) frontier and the proposal.
    sisa_plan: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.knot_spacing and self.knot_spacing < 0.05:
            raise ValueError("knot_spacing must be 0 or at least 0.05")
        if self.placement is not None:
            if self.placement.tail_slices >= self.sisa.slices:
                raise ValueError("placement.tail_slices must be below sisa.slices")
            if self.placement.column in (self.subject_column, self.label_column):
                raise ValueError("the placement column must not be the subject or label column")
        return self


# ModelConfig fields lethe fills itself (ingestion, planning); a client never sends them.
SERVER_FILLED = ("feature_spec", "classes", "sisa_config", "placement_report", "sisa_plan")


def _without_server_filled(schema: dict[str, Any]) -> None:
    for name in SERVER_FILLED:
        schema.get("properties", {}).pop(name, None)


class ModelConfigIn(ModelConfig):
    """A sharded classifier's config as a client registers it: the fields lethe fills at
    ingestion and planning are refused (a forged feature spec would break every later upload),
    and absent from the API description."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_without_server_filled)

    @model_validator(mode="before")
    @classmethod
    def _no_server_filled(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(data.get(name) is not None for name in SERVER_FILLED):
            raise ValueError("this field is filled by lethe at ingestion or planning")
        return data


DEFAULT_REFUSAL = "I'm sorry, but I can't share information about that."


class FinetuneSettings(BaseModel):
    """A generative model lethe fine-tunes itself (models.finetune): sliced LoRA training on
    ingested JSONL records, so a subject can also be removed exactly."""

    model_config = ConfigDict(extra="forbid")

    subject_column: str = Field("subject", min_length=1, max_length=100)
    slices: int = Field(8, ge=1, le=64)
    epochs: int = Field(4, ge=1, le=100)
    learning_rate: float = Field(2e-3, gt=0, le=1)
    batch_size: int = Field(8, ge=1, le=512)
    seed: int = Field(0, ge=0)
    lora_rank: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(16, ge=1, le=1024)
    adapter_layers: int = Field(4, ge=1, le=128)
    placement: Literal["hash", "likely_last"] = "hash"
    late_slices: int = Field(2, ge=1, le=63)
    layered: bool = Field(
        False,
        description="layer-sliced adapters (S3T): each slice trains its own group of the "
        "adapted layers; needs adapter_layers >= slices",
    )
    orders: int = Field(
        1,
        ge=1,
        le=8,
        description="slice orders trained (S3T's permutations, at most slices): an erasure "
        "serves the order where the subject's records were trained latest, so more of the "
        "fine-tune stays on; each order costs one more fine-tune's training and checkpoints",
    )

    @model_validator(mode="after")
    def _a_layer_group_per_slice(self) -> FinetuneSettings:
        if self.layered and self.adapter_layers < self.slices:
            raise ValueError("layered fine-tunes need adapter_layers >= slices")
        if self.orders > self.slices:
            raise ValueError("a fine-tune has at most as many slice orders as slices")
        return self


class GenerativeConfig(BaseModel):
    """A generative model lethe serves. Without ``finetune`` lethe cannot retrain it and it
    forgets by verifier rules; with it, ``model_dir`` is the base that lethe fine-tunes."""

    model_config = ConfigDict(extra="forbid")

    model_dir: LocalPath = Field(
        min_length=1, max_length=1000, description="local Hugging Face causal LM directory"
    )
    refusal_text: str = Field(DEFAULT_REFUSAL, min_length=1, max_length=500)
    max_new_tokens: int = Field(64, ge=1, le=512)
    # JSONL of {"question", "answer"} the model should keep answering: the negatives that
    # measure false flags, and the retained probes.
    retain_qa_file: LocalPath | None = Field(None, max_length=1000)
    embedder: Literal["minilm", "hashing"] = Field(
        "minilm", description="minilm: all-MiniLM-L6-v2; hashing: no model, for tiny setups"
    )
    finetune: FinetuneSettings | None = None
    # A stream's first text: after its first whole word (the next token shows where it ends),
    # or its first piece, screened, when nothing in it could begin a forgotten key span or a
    # word of a forgotten name (sooner; a first sentence that then fails its screen may end in
    # the refusal after that piece).
    stream_opening: Literal["whole_word", "first_piece"] = Field(
        "whole_word", description="when a guarded stream sends its first text"
    )


class GenerativePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.1, gt=0, lt=1, description="target miss rate of leaking answers")
    delta: float = Field(0.05, gt=0, lt=1, description="allowed calibration failure probability")
    alpha_b: float = Field(0.1, gt=0, lt=1, description="target P(not accepted within B)")
    max_budget: int = Field(4, ge=0, le=16)
    # Used only when λ cannot be certified; the certificate then says "no guarantee".
    fallback_threshold: float = Field(0.5, gt=0, le=1)
    max_probes: int = Field(
        40, ge=1, le=1000, description="held-apart probes generated to recalibrate λ"
    )
    # B and the exit are calibrated on the probes refinement handles (flagged first answers),
    # a small share of all probes: they are drawn until this many are handled, or the cap.
    # B needs 9 at α_B = 0.1; the exit needs 29 rescued at α_B = 0.1, δ = 0.05.
    budget_probes: int = Field(
        40, ge=1, le=1000, description="handled probes wanted to calibrate B and the exit"
    )
    max_budget_probes: int = Field(200, ge=1, le=5000, description="most probes drawn to find them")
    # "both" (fine-tuned models only): rules at once, then exact removal from the fine-tune.
    strategy: Literal["rules", "both"] = "rules"
    exact_deadline_days: int = Field(7, ge=1, le=30, description="rules → exact removal due")
    verify_exact: Literal["always", "sampled", "never"] = "always"
    verify_sample_rate: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _probes_consistent(self) -> GenerativePolicy:
        if self.budget_probes > self.max_budget_probes:
            raise ValueError("budget_probes must not exceed max_budget_probes")
        return self
