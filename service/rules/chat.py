"""Guarded chat for a generative model: read the weights it serves and the rules in force (one
short read; the handler commits and closes the session), and answer with no transaction open.

Frozen and fine-tuned weights alike: a model lethe fine-tunes answers with its current
version's merged weights (service.rules.finetuned_serving), any other with its folder's. Every
choice goes through the active rules (models.generative.chat), in the context of the whole
conversation."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from models.artifacts import ArtifactNotFound
from models.generative.chat import Guard
from service.core.config import Settings
from service.core.errors import conflict
from service.db.tables import MlModel
from service.registry.config import GenerativeConfig
from service.rules.finetuned_serving import (
    ServedVersion,
    confirm_purges,
    finetuned_generator,
    served_version,
)
from service.rules.rulesets import ActiveRules, load_active
from service.rules.runtime import generator, verifier_for


@dataclass(frozen=True)
class ServedChat:
    """What one chat request answers with: read once, so that every choice (and every
    sentence of a stream) uses one model version and one rule-set version."""

    generator: Any  # models.generative.generator.Generator (torch: imported lazily)
    guard: Guard | None
    config: GenerativeConfig
    model_version: int | None
    rule_set_version: int | None


@dataclass(frozen=True)
class ChatRead:
    """What a chat request read in the handler's session: the served version (a fine-tune's)
    and the active rules."""

    model_id: uuid.UUID
    config: GenerativeConfig
    served: ServedVersion | None
    active: ActiveRules | None


def read_chat(settings: Settings, session: Session, model: MlModel) -> ChatRead:
    """Reads the served version and the active rules; a fine-tune's purges on this host are
    confirmed (flushed: the handler commits them, then closes the session, before serving)."""
    config = GenerativeConfig.model_validate(model.config)
    served = served_version(session, model) if config.finetune is not None else None
    read = ChatRead(model.id, config, served, load_active(settings, session, model.id))
    if served is not None:
        confirm_purges(session, settings, read.model_id)
    return read


def serve_chat(settings: Settings, read: ChatRead) -> ServedChat:
    """Loads the weights ``read_chat`` read (no session used or held)."""
    loaded = _load_weights(settings, read.config, read.served)
    return ServedChat(
        generator=loaded,
        guard=guard_of(read.active, read.config, read.model_id),
        config=read.config,
        model_version=read.served.number if read.served is not None else None,
        rule_set_version=read.active.version if read.active is not None else None,
    )


def _load_weights(
    settings: Settings, config: GenerativeConfig, served: ServedVersion | None
) -> Any:
    if served is None:
        return generator(config.model_dir)
    try:
        return finetuned_generator(settings, served)
    except ArtifactNotFound:
        # An erasure destroyed the version this request read before this process loaded it:
        # the next read finds the new version.
        raise conflict("model_version_switched", "the model switched versions; retry") from None


def guard_of(
    active: ActiveRules | None, config: GenerativeConfig, model_id: uuid.UUID
) -> Guard | None:
    """The active rules as answers apply them; None when nothing is to be forgotten (no
    version yet, or every rule retired)."""
    if active is None or not active.rules.rules:
        return None
    return Guard(
        verifier=verifier_for((model_id, active.version), active.rules, config.embedder),
        threshold=active.threshold,
        budget=active.budget,
        refusal_text=config.refusal_text,
        # Used only when certified (ActiveRules.exit_threshold is None otherwise).
        exit_threshold=active.exit_threshold,
        opening=config.stream_opening,
    )


def choice_seed(seed: int, index: int) -> int:
    """The sampling seed of choice `index` of a request seeded with `seed`: distinct per
    choice, and far from `seed + round` (refinement's regeneration seeds), so no choice
    replays another's attempt."""
    return random.Random(f"chat:{seed}:{index}").randrange(2**31)
