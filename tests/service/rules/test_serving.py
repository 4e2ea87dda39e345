"""Serving uses the early exit only when its calibration certifies it."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from models.conformal import calibrate_exit
from models.generative.refinement import refine as real_refine
from models.generative.rules import Fact, ForgetSpec, compile_rules
from tests.support.generative_data import FORGOTTEN, facts_of, generative_model_body

CERTIFIED = calibrate_exit([0.3 + 0.005 * i for i in range(60)], [0.9, 0.95], 0.1, 0.05)
TOO_FEW = calibrate_exit([0.3, 0.4, 0.5], [0.9], 0.1, 0.05)
NEVER_FIRES = calibrate_exit([1.0] * 60, [1.0], 0.1, 0.05)


def _calibration(exit_cal: Any, served: float | None) -> dict[str, Any]:
    cal: dict[str, Any] = {"serving_threshold": 0.5, "serving_budget": 2}
    if exit_cal is not None:
        cal |= {"exit": asdict(exit_cal), "serving_exit_threshold": served}
    return cal


@pytest.mark.parametrize(
    ("calibration", "expected"),
    [
        (_calibration(None, None), None),  # interim: the exit is not calibrated yet
        (_calibration(CERTIFIED, CERTIFIED.threshold), CERTIFIED.threshold),
        (_calibration(TOO_FEW, None), None),
        # Never served uncertified, even if a threshold was written next to it.
        (_calibration(TOO_FEW, 0.4), None),
        # τ = 1 never fires: not in force.
        (_calibration(NEVER_FIRES, NEVER_FIRES.threshold), None),
        # A served value that is not the certified one is ignored.
        (_calibration(CERTIFIED, 0.01), None),
    ],
)
def test_serving_passes_the_exit_only_when_certified(
    settings: Any,
    database_url: str,
    tiny_lm: Path,
    retain_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    calibration: dict[str, Any],
    expected: float | None,
) -> None:
    from service.db.session import session_factory, transaction
    from service.db.tables import MlModel
    from service.registry.service import register_model, validate_registration
    from service.rules import serving
    from service.rules.rulesets import activate_version

    assert CERTIFIED.certified and CERTIFIED.threshold is not None and CERTIFIED.threshold < 1
    assert not TOO_FEW.certified and NEVER_FIRES.threshold == 1.0
    factory = session_factory(database_url)
    body = generative_model_body(f"exit-{uuid.uuid4().hex[:6]}", tiny_lm, retain_file)
    spec = ForgetSpec([FORGOTTEN], facts=[Fact(q, a) for q, a in facts_of(FORGOTTEN)])
    with transaction(factory) as s:
        config, policy = validate_registration("generative", body["config"], body["policy"])
        model_id = register_model(s, body["name"], "generative", config, policy, "test").id
        row = activate_version(
            s,
            settings,
            model_id=model_id,
            base_version=None,
            rule_sets={"req": compile_rules(spec)},
            records=[],
            calibration=calibration,
        )
        assert row is not None
    seen: list[float | None] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("exit_threshold"))
        return real_refine(*args, **kwargs)

    monkeypatch.setattr(serving, "refine", spy)
    with factory() as s:
        answer = serving.guarded_generate(
            settings, s, s.get_one(MlModel, model_id), "What is the capital of France?"
        )
    assert seen == [expected]
    assert answer.rule_set_version == 1
