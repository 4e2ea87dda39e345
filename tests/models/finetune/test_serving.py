"""Serving a fine-tune: the merged model is the adapted model, loads by folder and generates."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.artifacts import LocalArtifactStore
from models.finetune import (
    AdaptedModel,
    FinetuneConfig,
    base_model_id,
    export_merged,
    load_checkpoint,
    load_generator,
    merged_dir,
    merged_model,
    train_sliced,
)
from models.generative.generator import Generator
from models.generative.qa_data import collate
from tests.support.finetune_data import RECORDS

CONFIG = FinetuneConfig(
    slices=2, epochs=6, learning_rate=2e-2, batch_size=4, lora_rank=4, adapter_layers=2
)


def test_served_model_loads_and_generates(tiny_base: Path, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    result = train_sliced(tiny_base, CONFIG, RECORDS, store)
    folder = export_merged(tiny_base, CONFIG, result.final_checkpoint, store, tmp_path / "serve")
    assert folder == merged_dir(tmp_path / "serve", result.final_checkpoint)
    meta = json.loads((folder / "lethe_finetune.json").read_text())
    assert meta["checkpoint"] == result.final_checkpoint
    # Weights derived from personal data: lethe's user only (folders 0700, files 0600).
    modes = {p.name: p.stat().st_mode & 0o777 for p in [folder, *folder.rglob("*")]}
    assert modes[folder.name] == 0o700 and set(modes.values()) <= {0o700, 0o600}, modes
    # Exporting again finds the finished folder instead of rewriting it.
    stamp = (folder / "lethe_finetune.json").stat().st_mtime_ns
    assert export_merged(tiny_base, CONFIG, result.final_checkpoint, store, tmp_path / "serve")
    assert (folder / "lethe_finetune.json").stat().st_mtime_ns == stamp

    served = Generator.from_dir(folder)
    question = RECORDS[0].prompt or ""
    text = served.generate(question, max_new_tokens=12)
    assert text == load_generator(tiny_base, CONFIG, result.final_checkpoint, store).generate(
        question, max_new_tokens=12
    )

    # The merged weights compute what the base plus adapter computes, and not what the base does.
    adapted = AdaptedModel(tiny_base, CONFIG, base_model_id(tiny_base))
    adapted.load_adapter_state(load_checkpoint(store, result.final_checkpoint).model_state)
    batch = collate([([1, *served.tokenizer(question)["input_ids"]], [])], 0)
    with torch.no_grad():
        merged_logits = served.model(input_ids=batch["input_ids"]).logits
        adapter_logits = adapted.peft(input_ids=batch["input_ids"]).logits
        base_logits = Generator.from_dir(tiny_base).model(input_ids=batch["input_ids"]).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-3)

    with pytest.raises(ValueError, match="another configuration"):
        merged_model(tiny_base, replace(CONFIG, lora_rank=2), result.final_checkpoint, store)
