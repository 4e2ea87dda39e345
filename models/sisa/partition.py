"""Where a record lives: its shard (chosen by subject), its slice (chosen by record key and, with
ARCANE-style placement, by a flag given at ingestion) and whether it validates its shard."""

from __future__ import annotations

import hashlib
import hmac

from models.sisa.config import SisaConfig

__all__ = ["assign_shard", "assign_slice", "is_validation_record"]

# Resolution of the validation draw: fractions are honoured to 1e-6.
_VALIDATION_BUCKETS = 1_000_000


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


def assign_slice(record_key: str, config: SisaConfig, *, likely_erased: bool = False) -> int:
    """The slice of a record, a function of the record alone (its key and its flag).

    Depending on nothing else is what keeps slice boundaries fixed when other records are erased:
    positional slicing would shift later records into earlier slices and force a full retrain.

    With ``config.tail_slices = t > 0`` (ARCANE-style placement), records flagged at ingestion as
    ``likely_erased`` (a subject who asked before, a recent sign-up, a churn score above a cut)
    go to the last ``t`` slices and all others to the first ``R - t``: erasing a flagged record
    then retrains only the tail. The flag must be fixed when the record is stored; re-scoring
    later would move records between slices. With ``t = 0`` the flag is ignored.
    """
    tail = config.tail_slices
    if tail == 0:
        return _keyed_bucket(config.partition_salt, b"slice\x00", record_key, config.slices)
    if likely_erased:
        offset = config.slices - tail
        return offset + _keyed_bucket(config.partition_salt, b"slice\x00", record_key, tail)
    head = config.slices - tail
    return _keyed_bucket(config.partition_salt, b"slice\x00", record_key, head)


def is_validation_record(record_key: str, config: SisaConfig) -> bool:
    """Whether a record is held out to validate (early-stop) its shard rather than trained on.

    A keyed hash of the key alone, so a retained record never changes sides when others are
    erased, and the validation set of a retrained shard is that of training it from scratch.
    """
    if not config.early_stopping:
        return False
    bucket = _keyed_bucket(
        config.partition_salt, b"validation\x00", record_key, _VALIDATION_BUCKETS
    )
    return bucket < round(config.validation_fraction * _VALIDATION_BUCKETS)
