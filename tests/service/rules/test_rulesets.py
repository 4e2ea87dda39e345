"""Rule-set versions: generations racing activations read exactly one version, and activating on an
outdated base is refused."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from models.generative.rules import Fact, ForgetSpec
from tests.support.generative_data import (
    FORGOTTEN,
    RETAINED,
    facts_of,
    generative_model_body,
)


def _spec(name: str) -> ForgetSpec:
    return ForgetSpec(subject_names=[name], facts=[Fact(q, a) for q, a in facts_of(name)])


def test_activation_is_atomic_for_concurrent_generations(
    settings: Any, database_url: str, tiny_lm: Path, retain_file: Path
) -> None:
    """Generations racing activations read the rules, λ and B of exactly one version."""
    from models.generative.rules import compile_rules
    from service.db.session import session_factory, transaction
    from service.registry.service import register_model, validate_registration
    from service.rules.rulesets import activate_version, load_active

    factory = session_factory(database_url)
    body = generative_model_body(f"atomic-{uuid.uuid4().hex[:6]}", tiny_lm, retain_file)
    with transaction(factory) as s:
        config, policy = validate_registration("generative", body["config"], body["policy"])
        model_id = register_model(s, body["name"], "generative", config, policy, "test").id
    expected: dict[int, tuple[float, int, int]] = {}
    stop = threading.Event()
    seen: list[tuple[int, float, int, int]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                with factory() as s:
                    active = load_active(settings, s, model_id)
                if active is not None:
                    seen.append(
                        (active.version, active.threshold, active.budget, len(active.rules.rules))
                    )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    rule_sets: dict[str, Any] = {}
    for i, name in enumerate([FORGOTTEN, *RETAINED]):
        # Request ids as the service makes them: later tests on this database read them back.
        rule_sets = {**rule_sets, str(uuid.uuid4()): compile_rules(_spec(name))}
        threshold, budget = round(0.3 + 0.1 * i, 2), i + 1
        with transaction(factory) as s:
            row = activate_version(
                s,
                settings,
                model_id=model_id,
                base_version=i or None,
                rule_sets=rule_sets,
                records=[],
                calibration={"serving_threshold": threshold, "serving_budget": budget},
            )
            assert row is not None
            expected[row.version] = (
                threshold,
                budget,
                sum(len(r.rules) for r in rule_sets.values()),
            )
    stop.set()
    for t in threads:
        t.join()
    assert not errors and seen
    for version, threshold, budget, count in seen:
        assert expected[version] == (threshold, budget, count), "a mix of two versions"
    with transaction(factory) as s:
        stale = activate_version(
            s,
            settings,
            model_id=model_id,
            base_version=1,
            rule_sets=rule_sets,
            records=[],
            calibration={"serving_threshold": 0.5, "serving_budget": 1},
        )
        assert stale is None  # activating on an outdated base is refused
