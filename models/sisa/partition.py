"""Where a record lives: its shard (chosen by subject) and its slice (chosen by record key)."""

from __future__ import annotations

import hashlib
import hmac

from models.sisa.config import SisaConfig

__all__ = ["assign_shard", "assign_slice"]


def _keyed_bucket(salt: str, domain: bytes, value: str, buckets: int) -> int:
    # HMAC keyed with the salt: shard placement cannot be predicted (or steered) without it, and
    # the domain tag keeps shard and slice hashes independent of each other.
    digest = hmac.new(salt.encode("utf-8"), domain + value.encode("utf-8"), hashlib.sha256)
    return int.from_bytes(digest.digest()[:8], "big") % buckets


def assign_shard(subject_ref: str, config: SisaConfig) -> int:
    """The shard holding every record of a subject, so one erasure request retrains one shard.

    ``subject_ref`` should already be a pseudonymous reference (e.g. an HMAC of the identifier).
    """
    return _keyed_bucket(config.partition_salt, b"shard\x00", subject_ref, config.shards)


def assign_slice(record_key: str, config: SisaConfig) -> int:
    """The slice of a record, a function of its own key only.

    Depending on nothing else is what keeps slice boundaries fixed when other records are erased:
    positional slicing would shift later records into earlier slices and force a full retrain.
    """
    return _keyed_bucket(config.partition_salt, b"slice\x00", record_key, config.slices)
