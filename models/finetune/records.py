"""Fine-tuning records, their slices (chosen by subject), and their fixed training order."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from models.finetune.config import FinetuneConfig
from models.generative.qa_data import qa_example
from models.slicing.checkpoints import encode_keys

__all__ = [
    "Example",
    "FinetuneRecord",
    "SliceLayout",
    "assign_slice",
    "keys_by_slice",
    "slice_of_subjects",
    "tokenize_record",
]

# (input ids, labels); labels are IGNORE where no loss is taken.
Example = tuple[list[int], list[int]]


@dataclass(frozen=True)
class FinetuneRecord:
    """One training text. ``key`` must be unique and immutable (checkpoints are addressed by
    keys; contents are cross-checked through a digest of the token ids).

    With ``prompt`` the record is a question/answer pair rendered through the chat template and
    the loss covers the answer only; without it the loss covers the whole ``completion``.
    ``likely_erased`` flags a subject as likely to be erased (e.g. newest customers, or a flag
    given at ingestion); it only matters under ``placement="likely_last"``.
    """

    key: str
    subject: str
    completion: str
    prompt: str | None = None
    likely_erased: bool = False


def _keyed_bucket(salt: str, value: str, buckets: int) -> int:
    # HMAC keyed with the salt: placement cannot be predicted (or steered) without it.
    digest = hmac.new(salt.encode("utf-8"), b"ft-slice\x00" + value.encode("utf-8"), "sha256")
    return int.from_bytes(digest.digest()[:8], "big") % buckets


def assign_slice(subject: str, config: FinetuneConfig, *, likely_erased: bool = False) -> int:
    """The slice of every record of ``subject``: a function of the subject (and its flag) only,
    so erasing other subjects never moves a slice boundary.

    ``subject`` should already be a pseudonymous reference (e.g. an HMAC of the identifier).
    Under ``likely_last`` flagged subjects hash into the last ``late_slices`` slices and the
    others into the slices before them. The slice returned is the bucket's training position
    under ``config.slice_order`` (S3T's permutations).
    """
    if config.placement == "hash":
        return config.position(_keyed_bucket(config.partition_salt, subject, config.slices))
    early = config.slices - config.late_slices
    if likely_erased:
        bucket = early + _keyed_bucket(config.partition_salt, subject, config.late_slices)
    else:
        bucket = _keyed_bucket(config.partition_salt, subject, early)
    return config.position(bucket)


def slice_of_subjects(config: FinetuneConfig, records: Iterable[FinetuneRecord]) -> dict[str, int]:
    """Subject → slice. A subject counts as flagged when any of its records is."""
    flagged: dict[str, bool] = {}
    for record in records:
        flagged[record.subject] = flagged.get(record.subject, False) or record.likely_erased
    return {s: assign_slice(s, config, likely_erased=f) for s, f in flagged.items()}


def keys_by_slice(config: FinetuneConfig, records: Iterable[FinetuneRecord]) -> list[list[str]]:
    """Each slice's record keys in training order (sorted), without tokenizing anything."""
    items = list(records)
    slices = slice_of_subjects(config, items)
    buckets: list[list[str]] = [[] for _ in range(config.slices)]
    for record in items:
        buckets[slices[record.subject]].append(record.key)
    for bucket in buckets:
        bucket.sort()
    return buckets


def tokenize_record(tokenizer: Any, record: FinetuneRecord, eos_id: int) -> Example:
    if record.prompt is not None:
        return qa_example(tokenizer, record.prompt, record.completion, eos_id)
    ids: list[int] = [*tokenizer(record.completion)["input_ids"], eos_id]
    return ids, list(ids)


@dataclass(frozen=True, eq=False)
class SliceLayout:
    """Records grouped by slice, sorted by key inside each slice, tokenized.

    Sorting makes the training order independent of the order the caller loaded the records
    in; the training set after slice ``r`` is the prefix ``examples[:ends[r]]``.
    """

    keys_by_slice: tuple[tuple[str, ...], ...]
    subjects: tuple[str, ...]
    examples: tuple[Example, ...]
    ends: tuple[int, ...]
    # Per slice r: a hash chained over the keys and token ids of slices 0..r. Stored in each
    # checkpoint and compared before resuming, so a record whose text changed under the same
    # key (or a tokenizer that changed) never resumes from a stale checkpoint.
    content_digests: tuple[str, ...]

    @classmethod
    def build(
        cls,
        config: FinetuneConfig,
        records: Sequence[FinetuneRecord],
        tokenizer: Any,
        eos_id: int,
    ) -> SliceLayout:
        seen: set[str] = set()
        for record in records:
            if record.key in seen:
                raise ValueError(f"duplicate record key {record.key!r}")
            seen.add(record.key)
        slices = slice_of_subjects(config, records)
        buckets: list[list[FinetuneRecord]] = [[] for _ in range(config.slices)]
        for record in records:
            buckets[slices[record.subject]].append(record)
        ordered: list[FinetuneRecord] = []
        ends: list[int] = []
        for bucket in buckets:
            bucket.sort(key=lambda r: r.key)
            ordered.extend(bucket)
            ends.append(len(ordered))
        examples = tuple(tokenize_record(tokenizer, r, eos_id) for r in ordered)
        keys = tuple(tuple(r.key for r in bucket) for bucket in buckets)
        return cls(
            keys_by_slice=keys,
            subjects=tuple(r.subject for r in ordered),
            examples=examples,
            ends=tuple(ends),
            content_digests=_chained_digests(keys, examples, ends),
        )

    @property
    def num_records(self) -> int:
        return len(self.examples)

    def lineage_hash(self) -> str:
        """sha256 over the ordered record keys: the retained-data lineage id."""
        keys = (key for slice_keys in self.keys_by_slice for key in slice_keys)
        return hashlib.sha256(encode_keys(keys)).hexdigest()


def _chained_digests(
    keys_by_slice: Sequence[Sequence[str]], examples: Sequence[Example], ends: Sequence[int]
) -> tuple[str, ...]:
    running = hashlib.sha256(b"lethe-finetune-content/v1")
    digests: list[str] = []
    lo = 0
    for keys, hi in zip(keys_by_slice, ends, strict=True):
        running.update(encode_keys(keys))
        for ids, labels in examples[lo:hi]:
            running.update(len(ids).to_bytes(8, "big"))
            for token in (*ids, *labels):
                running.update(token.to_bytes(8, "big", signed=True))
        digests.append(running.copy().hexdigest())
        lo = hi
    return tuple(digests)
