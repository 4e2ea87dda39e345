"""Which checkpoint each shard of a deployed ensemble serves from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.sisa.training import ShardTrainingResult

__all__ = ["Manifest", "VersionManifest"]


class Manifest(Mapping[int, str]):
    """Immutable mapping shard → final checkpoint id; a new version on every change."""

    def __init__(self, entries: Mapping[int, str]) -> None:
        self._entries = {int(shard): str(checkpoint) for shard, checkpoint in entries.items()}

    @classmethod
    def from_results(cls, results: Iterable[ShardTrainingResult]) -> Manifest:
        return cls({result.shard: result.final_checkpoint for result in results})

    def __getitem__(self, shard: int) -> str:
        return self._entries[shard]

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Manifest({self.version_hash()[:12]}, shards={len(self)})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Manifest):
            return self._entries == other._entries
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.version_hash())

    def replace(self, updates: Mapping[int, str]) -> Manifest:
        return Manifest({**self._entries, **updates})

    def to_dict(self) -> dict[str, str]:
        # JSON object keys are strings; shards are written in numeric order.
        return {str(shard): self._entries[shard] for shard in self}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        return cls({int(shard): str(checkpoint) for shard, checkpoint in data.items()})

    def version_hash(self) -> str:
        """sha256 of the canonical JSON form: names this exact ensemble."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class VersionManifest:
    """What one published version of an ensemble is made of: each shard's final checkpoint
    (what serves) and its per-slice checkpoints (what a later erasure resumes from, and what
    must be destroyed when a slice is retrained without someone)."""

    finals: Manifest
    slices: Mapping[int, tuple[str, ...]]

    @classmethod
    def from_results(cls, results: Iterable[ShardTrainingResult]) -> VersionManifest:
        ordered = sorted(results, key=lambda r: r.shard)
        return cls(
            Manifest.from_results(ordered),
            {r.shard: tuple(r.checkpoint_ids) for r in ordered},
        )

    def with_shard(self, shard: int, checkpoint_ids: Sequence[str]) -> VersionManifest:
        """This version with ``shard`` now served from the last of ``checkpoint_ids``."""
        return VersionManifest(
            self.finals.replace({shard: checkpoint_ids[-1]}),
            {**self.slices, shard: tuple(checkpoint_ids)},
        )

    def version_hash(self) -> str:
        return self.finals.version_hash()

    def holds_any(self, shard: int, checkpoints: Collection[str]) -> bool:
        return any(c in checkpoints for c in self.slices.get(shard, ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "final": self.finals.to_dict(),
            "slices": {str(s): list(ids) for s, ids in sorted(self.slices.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VersionManifest:
        return cls(
            Manifest.from_dict(data["final"]),
            {int(s): tuple(str(c) for c in ids) for s, ids in data["slices"].items()},
        )
