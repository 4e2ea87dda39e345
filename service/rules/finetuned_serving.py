"""Serving a fine-tuned model: the current version's merged weights, guarded by the active
verifier rules.

A generation reads the model version and the rule-set version once, then generates with the
weights of that version only: generators are cached by checkpoint id, and a new version is a
new checkpoint, so a switch needs no restart and a generation never mixes two versions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from models.artifacts import ArtifactNotFound
from models.finetune import FinetuneConfig, export_merged
from service.core.config import Settings
from service.core.errors import conflict
from service.core.storage import artifact_store, drop_stale_merged, merged_root
from service.db.tables import MlModel
from service.erasure.host_purges import acknowledge
from service.registry.config import GenerativeConfig
from service.registry.service import current_version
from service.rules.rulesets import ActiveRules, load_active
from service.rules.runtime import GENERATORS
from service.rules.serving import answer_with_rules


@dataclass(frozen=True)
class ServedOrder:
    """One slice order of a fine-tune version (S3T's permutations): its config, its stored
    checkpoints and the one it would serve."""

    config: FinetuneConfig
    checkpoints: tuple[str, ...]
    final: str


@dataclass(frozen=True)
class ServedVersion:
    """The current version of a fine-tune; ``config`` and ``checkpoint`` are those of the order
    that serves (``orders[served_order]``)."""

    number: int
    base_dir: str
    config: FinetuneConfig
    base_id: str
    checkpoint: str
    orders: tuple[ServedOrder, ...] = ()
    served_order: int = 0


def manifest_orders(manifest: Mapping[str, Any]) -> tuple[ServedOrder, ...]:
    """Every slice order a fine-tune version keeps; a version with one order has no
    ``orders`` list, its top-level config and checkpoints are the order."""
    entries = manifest.get("orders") or [manifest]
    return tuple(
        ServedOrder(
            config=FinetuneConfig.from_dict(entry["config"]),
            checkpoints=tuple(str(c) for c in entry["checkpoints"]),
            final=str(entry["final"]),
        )
        for entry in entries
    )


@dataclass(frozen=True)
class FinetunedAnswer:
    text: str
    model_version: int
    rule_set_version: int | None
    rounds_used: int
    refused: bool
    reason: str


def served_version(session: Session, model: MlModel) -> ServedVersion:
    version = current_version(session, model)
    if version is None:
        raise conflict("model_not_trained", "this model has not been fine-tuned yet")
    manifest = version.manifest
    return ServedVersion(
        number=version.number,
        base_dir=GenerativeConfig.model_validate(model.config).model_dir,
        config=FinetuneConfig.from_dict(manifest["config"]),
        base_id=str(manifest["base_id"]),
        checkpoint=str(manifest["final"]),
        orders=manifest_orders(manifest),
        served_order=int(manifest.get("served_order", 0)),
    )


def finetuned_generator(settings: Settings, served: ServedVersion) -> Any:
    """The generator of one version's weights, loaded once per process (keyed by checkpoint)."""
    from models.generative.generator import Generator  # torch + transformers: load lazily

    def load() -> Generator:
        # A version this host has not served yet: the one it served may have been erased on
        # another host, so its merged weights here go first.
        drop_stale_merged(settings)
        folder = export_merged(
            served.base_dir,
            served.config,
            served.checkpoint,
            artifact_store(settings),
            merged_root(settings),
            base_id=served.base_id,
        )
        return Generator.from_dir(Path(folder))

    return GENERATORS.get(("finetune", served.checkpoint), load)


def forget_generator(checkpoint: str) -> None:
    """This process's loaded copy of a checkpoint's weights (erased)."""
    GENERATORS.drop(("finetune", checkpoint))


def confirm_purges(session: Session, settings: Settings, model_id: uuid.UUID) -> int:
    """Before serving a model: this host's unconfirmed purges of it (an erasure on another
    host destroyed a version this host had copies of) are done and confirmed now rather than
    at the host loop's next tick. Flushes only: the handler commits before it serves. How
    many were confirmed."""
    return acknowledge(session, settings, "api", model_id=model_id, forget=forget_generator)


@dataclass(frozen=True)
class FinetunedRead:
    """What one generation of a fine-tune answers with, read in the handler's session."""

    model_id: uuid.UUID
    config: GenerativeConfig
    served: ServedVersion
    active: ActiveRules | None


def read_finetuned(settings: Settings, session: Session, model: MlModel) -> FinetunedRead:
    """Reads the served version and the active rules and confirms this host's purges of the
    model (flushed; the handler commits them, then closes the session, before generating)."""
    read = FinetunedRead(
        model_id=model.id,
        config=GenerativeConfig.model_validate(model.config),
        served=served_version(session, model),
        active=load_active(settings, session, model.id),
    )
    confirm_purges(session, settings, read.model_id)
    return read


def finetuned_generate(
    settings: Settings,
    read: FinetunedRead,
    prompt: str,
    *,
    seed: int = 0,
    max_new_tokens: int | None = None,
) -> FinetunedAnswer:
    """Generates with the version ``read_finetuned`` read; no session is used or held."""
    try:
        loaded = finetuned_generator(settings, read.served)
    except ArtifactNotFound:
        # This process had not loaded the version it read, and an erasure has since destroyed
        # its checkpoint: the next read finds the new version.
        raise conflict("model_version_switched", "the model switched versions; retry") from None
    tokens = max_new_tokens or read.config.max_new_tokens
    answer = answer_with_rules(
        loaded, tokens, read.active, read.config, read.model_id, prompt, seed=seed
    )
    return FinetunedAnswer(
        answer.text,
        read.served.number,
        answer.rule_set_version,
        answer.rounds_used,
        answer.refused,
        answer.reason,
    )
