"""A registered model's configuration and policy, validated at the API edge."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# A hidden layer's width: positive and small enough to allocate (2^31 weights would not be).
Width = Annotated[int, Field(ge=1, le=4096)]


def _local_path(value: str) -> str:
    """A path the OS can look up: no NUL byte, no component longer than a file name may be."""
    if "\x00" in value or any(len(part.encode()) > 255 for part in value.split("/")):
        raise ValueError("not a usable path")
    return value


LocalPath = Annotated[str, AfterValidator(_local_path)]


class SisaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shards: int = Field(8, ge=1, le=256)
    slices: int = Field(4, ge=1, le=64)
    epochs: int = Field(20, ge=1, le=500)
    hidden: list[Width] = Field(default_factory=lambda: [64, 32], min_length=1, max_length=4)
    learning_rate: float = Field(0.01, gt=0, le=1)
    batch_size: int = Field(64, ge=1, le=4096)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class ModelPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # When the bit-exact check (a from-scratch retrain of the shard) runs in production.
    verify_exact: Literal["always", "sampled", "never"] = "always"
    verify_sample_rate: float = Field(0.1, ge=0, le=1)


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_column: str = Field(min_length=1, max_length=100)
    label_column: str = Field(min_length=1, max_length=100)
    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    sisa: SisaSettings = Field(default_factory=SisaSettings)
    # Filled at ingestion: column types, label classes, the full SISA config.
    feature_spec: dict[str, Any] | None = None
    classes: list[str] | None = None
    sisa_config: dict[str, Any] | None = None


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


class GenerativePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.1, gt=0, lt=1, description="target miss rate of leaking answers")
    delta: float = Field(0.05, gt=0, lt=1, description="allowed calibration failure probability")
    alpha_b: float = Field(0.1, gt=0, lt=1, description="target P(not accepted within B)")
    max_budget: int = Field(4, ge=0, le=16)
    # Used only when λ cannot be certified; the certificate then says "no guarantee".
    fallback_threshold: float = Field(0.5, gt=0, le=1)
    max_probes: int = Field(40, ge=1, le=1000, description="probes generated to calibrate B")
    # "both" (fine-tuned models only): rules at once, then exact removal from the fine-tune.
    strategy: Literal["rules", "both"] = "rules"
    exact_deadline_days: int = Field(7, ge=1, le=30, description="rules → exact removal due")
    verify_exact: Literal["always", "sampled", "never"] = "always"
    verify_sample_rate: float = Field(0.1, ge=0, le=1)
