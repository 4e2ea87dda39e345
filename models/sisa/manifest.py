"""Which checkpoint each shard of a deployed ensemble serves from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from models.sisa.training import ShardTrainingResult

__all__ = ["Manifest"]


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
