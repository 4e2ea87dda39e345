"""Guarded generation: every answer of a generative model passes the active verifier rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from models.generative.refinement import refine
from service.core.config import Settings
from service.db.tables import MlModel
from service.registry.config import GenerativeConfig
from service.rules.rulesets import ActiveRules, load_active
from service.rules.runtime import generator, verifier_for

if TYPE_CHECKING:
    from models.generative.generator import Generator


@dataclass(frozen=True)
class GuardedAnswer:
    text: str
    rule_set_version: int | None
    rounds_used: int
    refused: bool
    reason: str


def guarded_generate(
    settings: Settings,
    session: Session,
    model: MlModel,
    prompt: str,
    *,
    seed: int = 0,
    max_new_tokens: int | None = None,
) -> GuardedAnswer:
    """Reads the active version, closes the session, then generates (no transaction held)."""
    config = GenerativeConfig.model_validate(model.config)
    active = load_active(settings, session, model.id)
    model_id = model.id
    session.close()
    lm = generator(config.model_dir)
    tokens = max_new_tokens or config.max_new_tokens
    return answer_with_rules(lm, tokens, active, config, model_id, prompt, seed=seed)


def answer_with_rules(
    lm: Generator,
    max_new_tokens: int,
    active: ActiveRules | None,
    config: GenerativeConfig,
    model_id: uuid.UUID,
    prompt: str,
    *,
    seed: int,
) -> GuardedAnswer:
    """One answer through the active rules, whatever weights ``lm`` serves: accepted,
    regenerated with feedback, or refused. Called with no transaction open."""
    if active is None or not active.rules.rules:  # nothing to forget, or every rule retired
        plain = lm.bind(max_new_tokens=max_new_tokens)
        text = plain(prompt, banned_phrases=(), instruction=None, seed=seed)
        return GuardedAnswer(text, active.version if active else None, 0, False, "no_rules")
    from models.generative.chat import Release  # imports torch: load lazily, like the model

    verifier = verifier_for((model_id, active.version), active.rules, config.embedder)
    # An answer cut at the token limit ends before a word that could begin a forgotten one.
    generate = lm.bind(max_new_tokens=max_new_tokens, held_tail=Release(verifier).cut_end)
    result = refine(
        generate,
        verifier,
        prompt,
        threshold=active.threshold,
        budget=active.budget,
        refusal_text=config.refusal_text,
        seed=seed,
        # The prompt goes to the verifier inside `refine` (subject attribution); the exit is
        # used only when certified (ActiveRules.exit_threshold is None otherwise).
        exit_threshold=active.exit_threshold,
    )
    return GuardedAnswer(
        result.response, active.version, result.rounds_used, result.refused, result.reason
    )
