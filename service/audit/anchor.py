"""Signed checkpoints of the audit chain, kept outside the database.

The hash chain alone proves internal consistency only: a database superuser can alter a row and
recompute every later hash, or cut the tail, and the chain still verifies. A *checkpoint* is an
Ed25519 signature over (last sequence, head hash, time) made with a key the database never holds,
stored in an artifact store (a folder or bucket the database admin cannot write) and embedded in
every export. Anyone holding one checkpoint and the public key can later prove that the rows up
to its sequence are unchanged and still present: the head hash commits to every earlier row.

When checkpoints are written: by an ``after_commit`` hook on every session that appended audit
events (the session factory carries the ``Anchor``, see ``anchored``). Per commit rather than
periodically, because a periodic signer leaves every event of the last period rewritable without
trace, and a checkpoint costs one signature and one small object. The hook runs after the commit,
so a crash between commit and signing leaves the newest events unanchored until the next
commit's checkpoint (which covers them, since a head commits to everything before it) or the
reaper's periodic ``checkpoint_head`` catches up; signing never fails or delays the transaction.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from models.artifacts import ArtifactStore, open_store
from service.audit.chain import HEAD_INFO_KEY, ChainVerification, verify_chain
from service.db.tables import AuditEvent

log = logging.getLogger(__name__)

_DOMAIN = b"lethe-audit-checkpoint-v1\n"
_PREFIX = "audit-checkpoints/"
_ANCHOR_KEY = "lethe_audit_anchor"
KEY_FILE_NAME = "audit-signing.key"


class AnchorKeyMissing(RuntimeError):
    """Production requires a signing key that lives outside the database."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem_or_b64: str | bytes) -> Ed25519PublicKey:
    data = pem_or_b64.encode() if isinstance(pem_or_b64, str) else pem_or_b64
    if b"BEGIN PUBLIC KEY" in data:
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))


def _load_private_key(data: bytes) -> Ed25519PrivateKey:
    if b"BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip(), validate=True))


def generate_key_file(path: Path) -> Ed25519PrivateKey:
    """A new private key in a file only its owner can read (development default)."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(_b64(raw).encode() + b"\n")
    return key


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    head_hash: str
    signed_at: str
    key_id: str
    signature: str = ""

    def payload(self) -> bytes:
        body = {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
        }
        return _DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signature_valid(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(base64.b64decode(self.signature, validate=True), self.payload())
        except (InvalidSignature, ValueError):
            return False
        return True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        seq, head = data.get("seq"), data.get("head_hash")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("checkpoint seq must be a non-negative integer")
        if not isinstance(head, str) or len(head) != 64:
            raise ValueError("checkpoint head_hash must be a 64-character hex digest")
        return cls(
            seq=seq,
            head_hash=head,
            signed_at=str(data.get("signed_at", "")),
            key_id=str(data.get("key_id", "")),
            signature=str(data.get("signature", "")),
        )


class Anchor:
    """Signs checkpoints with a key the database never sees and keeps them in a store."""

    def __init__(self, private_key: Ed25519PrivateKey, store: ArtifactStore) -> None:
        self._key = private_key
        self.store = store
        self.public_key = private_key.public_key()
        self.key_id = public_key_id(self.public_key)

    @classmethod
    def from_settings(cls, settings: Any) -> Anchor:
        """Key: ``audit_signing_key`` (base64 or PEM), else ``audit_signing_key_file``, else
        (development and test only) a key generated once into the data folder."""
        inline: str | None = settings.audit_signing_key
        key_file: Path | None = settings.audit_signing_key_file
        if inline:
            key = _load_private_key(inline.encode())
        elif key_file is not None:
            key = _load_private_key(Path(key_file).read_bytes())
        elif settings.environment == "production":
            raise AnchorKeyMissing("set LETHE_AUDIT_SIGNING_KEY or LETHE_AUDIT_SIGNING_KEY_FILE")
        else:
            default = Path(settings.data_dir) / KEY_FILE_NAME
            try:
                key = generate_key_file(default)
            except FileExistsError:
                key = _load_private_key(default.read_bytes())
        location = settings.audit_checkpoint_url or str(Path(settings.data_dir).resolve())
        return cls(key, open_store(location))

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def public_info(self) -> dict[str, str]:
        return {"algorithm": "Ed25519", "key_id": self.key_id, "public_key": self.public_key_pem()}

    def sign(self, seq: int, head_hash: str, at: datetime | None = None) -> Checkpoint:
        signed_at = (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
        unsigned = Checkpoint(seq, head_hash, signed_at, self.key_id)
        signature = _b64(self._key.sign(unsigned.payload()))
        return Checkpoint(seq, head_hash, signed_at, self.key_id, signature)

    def write(self, checkpoint: Checkpoint) -> None:
        # One object per sequence number: a later checkpoint never overwrites an earlier one.
        data = json.dumps(checkpoint.as_dict(), sort_keys=True).encode()
        self.store.put(f"{_PREFIX}{checkpoint.seq:015d}.json", data)

    def stored(self) -> list[Checkpoint]:
        found = []
        for key in self.store.keys(_PREFIX):
            try:
                found.append(Checkpoint.from_dict(json.loads(self.store.get(key))))
            except (ValueError, KeyError):
                log.warning("unreadable audit checkpoint object skipped")
        return found

    def latest(self) -> Checkpoint | None:
        keys = self.store.keys(_PREFIX)
        if not keys:
            return None
        return Checkpoint.from_dict(json.loads(self.store.get(keys[-1])))

    def checkpoint_head(self, session: Session) -> Checkpoint | None:
        """Sign and store the current head (the periodic catch-up; no-op on an empty chain)."""
        head = session.execute(
            select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
        ).first()
        if head is None:
            return None
        checkpoint = self.sign(int(head[0]), str(head[1]))
        self.write(checkpoint)
        return checkpoint


def anchored(factory: sessionmaker[Session], anchor: Anchor) -> sessionmaker[Session]:
    """The same session factory, whose sessions checkpoint the chain after each commit."""
    kw = dict(factory.kw)
    kw["info"] = {**kw.get("info", {}), _ANCHOR_KEY: anchor}
    return sessionmaker(class_=factory.class_, **kw)


@event.listens_for(Session, "after_commit")
def _checkpoint_after_commit(session: Session) -> None:
    head = session.info.pop(HEAD_INFO_KEY, None)
    anchor: Anchor | None = session.info.get(_ANCHOR_KEY)
    if head is None or anchor is None:
        return
    try:
        anchor.write(anchor.sign(*head))
    except Exception as exc:  # the commit stands; the next checkpoint covers these events
        log.error("audit checkpoint not written: %s", type(exc).__name__)


@event.listens_for(Session, "after_soft_rollback")
def _drop_head(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(HEAD_INFO_KEY, None)


def read_checkpoint(source: str) -> Checkpoint:
    """A checkpoint from a file path or an http(s) URL (e.g. an export an auditor kept)."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as response:
            data: Any = json.loads(response.read())
    else:
        data = json.loads(Path(source).read_text())
    # An exported report carries its checkpoint under "anchor"; a bare checkpoint is accepted too.
    if isinstance(data, dict) and isinstance(data.get("anchor"), dict):
        data = data["anchor"].get("checkpoint")
    if not isinstance(data, dict):
        raise ValueError("no checkpoint found")
    return Checkpoint.from_dict(data)


def verify_against(
    session: Session, checkpoint: Checkpoint, public_key: Ed25519PublicKey
) -> ChainVerification:
    """The chain verifies *and* still contains, unchanged, the head the checkpoint signed.

    A rewrite at or before the checkpoint's sequence (even with every later hash recomputed)
    changes the hash at that sequence; a truncated tail or a deleted row (re-sequenced or not)
    removes it or moves it.
    """
    if not checkpoint.signature_valid(public_key):
        return ChainVerification(False, 0, None, "", checkpoint.seq, "checkpoint signature invalid")
    chain = verify_chain(session)
    if not chain.ok:
        return chain
    if chain.last_seq is None or chain.last_seq < checkpoint.seq:
        return ChainVerification(
            False,
            chain.events_checked,
            chain.last_seq,
            chain.last_hash,
            checkpoint.seq,
            "chain truncated: the checkpoint's sequence is missing",
        )
    stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == checkpoint.seq))
    if stored != checkpoint.head_hash:
        return ChainVerification(
            False,
            chain.events_checked,
            chain.last_seq,
            chain.last_hash,
            checkpoint.seq,
            "chain rewritten: the hash at the checkpoint's sequence differs",
        )
    return chain


def export_block(session: Session, anchor: Anchor, chain: ChainVerification) -> dict[str, Any]:
    """What every export embeds: a fresh signed checkpoint of the head the export verified, and
    the check of the chain against the newest checkpoint stored before it."""
    previous = anchor.latest()
    against = verify_against(session, previous, anchor.public_key) if previous else None
    checkpoint = None
    # Never sign a head that contradicts an earlier checkpoint.
    if chain.ok and chain.last_seq is not None and (against is None or against.ok):
        checkpoint = anchor.sign(chain.last_seq, chain.last_hash)
        anchor.write(checkpoint)
    return {
        **anchor.public_info(),
        "checkpoint": checkpoint.as_dict() if checkpoint else None,
        "previous_checkpoint": previous.as_dict() if previous else None,
        "previous_checkpoint_check": against.as_dict() if against else None,
    }
