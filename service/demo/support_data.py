"""The support-bot's training records and the demo's cache of its fine-tune.

support-bot is SmolLM2-135M-Instruct that lethe fine-tunes (policy ``both``) on TOFU
question/answer pairs: three fictional authors (the "customers", 10 pairs each; one is later
erased) and one retain author (20 pairs): few enough records to keep the fine-tune, the restore
and its check within `make demo`'s minutes. Each record carries its subject, so an erasure
finds every record of the person it names.

The fine-tune's slice checkpoints are content-addressed (base weights, hyper-parameters and
the records' keys and tokens), so the demo keeps a copy of checkpoints under the cache folder
and puts them into each run's fresh artifact store: the worker's fine-tune job then finds
those slices already trained. Only checkpoints that survived the run's erasure are kept
(``keep_unerased_checkpoints``, after the erasure): every checkpoint that saw the erased
person is gone from the run's store and is dropped from the cache too, so no run keeps the
erased person's data for the next one (the next run trains those slices again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import open_store
from models.assets.tofu import QA, author_name, group_by_author, load_qa
from models.finetune.checkpoints import CHECKPOINT_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[2]
TOFU_DIR = REPO_ROOT / "data" / "tofu"
AUTHORS = 3  # "customers" fine-tuned on; the first one is erased
RETAIN_PAIRS = 20  # one retain author's 20 pairs
RETAIN_ROWS_PER_AUTHOR = 20
AUTHOR_PAIRS = 10  # of each customer author's 20 TOFU pairs
SLICES = 4

# Chosen by measuring ROUGE-L recall of the fine-tuned model on the authors' answers (see the
# README's demo section): LoRA rank 8 on every linear map of the top 4 of SmolLM2's 30 layers,
# R = 4 slices, 8 equivalent epochs (4 per slice) at lr 5e-3. The authors are flagged as likely
# to be erased, so they sit in the last slice and an erasure retrains that slice only.
FINETUNE = {
    "subject_column": "subject",
    "slices": SLICES,
    "epochs": 8,
    "learning_rate": 5e-3,
    "batch_size": 8,
    "seed": 0,
    "lora_rank": 8,
    "lora_alpha": 16,
    "adapter_layers": 4,
    "placement": "likely_last",
    "late_slices": 1,
}


@dataclass(frozen=True)
class SupportData:
    authors: dict[int, list[QA]]
    """The customer authors by TOFU author index; the first is the one erased."""
    retain: list[QA]

    @property
    def forgotten(self) -> list[QA]:
        return self.authors[min(self.authors)]

    @property
    def others(self) -> list[list[QA]]:
        return [rows for index, rows in sorted(self.authors.items()) if index != min(self.authors)]

    def jsonl(self) -> bytes:
        """The records as ingested: subject, question, answer, and the likely-erased flag."""
        lines = [
            json.dumps(
                {
                    "subject": author_name(rows),
                    "question": r.question,
                    "answer": r.answer,
                    "likely_erased": True,
                }
            )
            for rows in self.authors.values()
            for r in rows
        ]
        lines += [
            json.dumps(
                {
                    "subject": f"retain-author-{i // RETAIN_ROWS_PER_AUTHOR}",
                    "question": r.question,
                    "answer": r.answer,
                }
            )
            for i, r in enumerate(self.retain)
        ]
        return ("\n".join(lines) + "\n").encode()

    def write_retain_file(self, path: Path) -> Path:
        """What the verifier rules must keep answering: the retain pairs and the other
        customers (their false flags are measured on these)."""
        with path.open("w") as handle:
            for row in [*self.retain, *(r for rows in self.others for r in rows)]:
                handle.write(json.dumps({"question": row.question, "answer": row.answer}) + "\n")
        return path


def support_data() -> SupportData:
    by_author = group_by_author(load_qa(TOFU_DIR / "forget_a.jsonl"))
    authors = {i: by_author[i][:AUTHOR_PAIRS] for i in sorted(by_author)[:AUTHORS]}
    return SupportData(authors, load_qa(TOFU_DIR / "retain.jsonl")[:RETAIN_PAIRS])


def _checkpoint_keys(root: Path) -> list[str]:
    return open_store(str(root)).keys(CHECKPOINT_PREFIX) if root.exists() else []


def seed_checkpoints(cache: Path, artifact_location: str) -> int:
    """Copy the cached slice checkpoints into the run's artifact store; returns how many."""
    keys = _checkpoint_keys(cache)
    if keys:
        source, target = open_store(str(cache)), open_store(artifact_location)
        for key in keys:
            target.put(key, source.get(key))
    return len(keys)


def keep_unerased_checkpoints(cache: Path, artifact_location: str) -> tuple[int, int]:
    """After the erasure: copy the run's surviving slice checkpoints into the cache and drop
    from the cache every checkpoint the erasure destroyed. Returns (kept, dropped)."""
    source = open_store(artifact_location)
    survivors = set(source.keys(CHECKPOINT_PREFIX))
    target = open_store(str(cache))
    for key in sorted(survivors):
        if not target.exists(key):
            target.put(key, source.get(key))
    dropped = [key for key in target.keys(CHECKPOINT_PREFIX) if key not in survivors]
    for key in dropped:
        target.delete(key)
    return len(survivors), len(dropped)
