"""Signed checkpoints of the audit chain, kept write-once outside the database.

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

Sign only what extends what was signed (the consistency check of transparency logs): before
signing a head, the signer checks that the row at its last signed sequence still has the signed
hash and that every row after it links, hashes and authenticates (``check_extends``; in the
committing transaction, under the chain's lock). On a mismatch it signs nothing and records the
tamper: an alert line in the log, a write-once record in the checkpoint store (which ``/readyz``,
the metrics and every verification read). Checkpoints are write-once (``service.audit.store``):
one object per signed head, named by its sequence and hash, never replaced.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
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

from service.audit.chain import HEAD_INFO_KEY, Problem, walk_from
from service.audit.store import WriteOnceStore, open_checkpoint_store
from service.db.tables import AuditEvent

log = logging.getLogger(__name__)

_DOMAIN = b"lethe-audit-checkpoint-v1\n"
_PREFIX = "audit-checkpoints/"
_ANCHOR_KEY = "lethe_audit_anchor"
_VERDICT_KEY = "lethe_audit_verdict"
_NOT_CHECKED = object()
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


_TAMPER_PREFIX = "audit-tamper/"
_REFRESH_S = 2.0


class Anchor:
    """Signs checkpoints with a key the database never sees and keeps them write-once.

    ``consistency_check=False`` gives the signer of old, which signs whatever head the database
    holds: only the attack tests' control uses it."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        store: WriteOnceStore,
        *,
        consistency_check: bool = True,
    ) -> None:
        self._key = private_key
        self.store = store
        self.public_key = private_key.public_key()
        self.key_id = public_key_id(self.public_key)
        self.consistency_check = consistency_check
        self._known: dict[str, Checkpoint | None] = {}
        self._listed_at = -1e9
        self._tampers: list[Problem] = []
        self._tampers_at = -1e9
        # (seq, hash) the last successful verification of this process reached.
        self.verified: tuple[int, str] | None = None
        self._signature_ok: dict[tuple[int, str, str, str], bool] = {}
        self._compared: set[tuple[int, str]] = set()

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
        return cls(key, open_checkpoint_store(location, settings.audit_checkpoint_retention_days))

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

    def write(self, checkpoint: Checkpoint) -> bool:
        """Store once: one object per signed head; a head already signed keeps its object."""
        key = f"{_PREFIX}{checkpoint.seq:015d}-{checkpoint.head_hash}.json"
        data = json.dumps(checkpoint.as_dict(), sort_keys=True).encode()
        written = self.store.put_once(key, data)
        if written:
            self._known[key] = checkpoint
        return written

    def _refresh(self, force: bool) -> None:
        if not force and time.monotonic() - self._listed_at < _REFRESH_S:
            return
        for key in self.store.keys(_PREFIX):
            if key not in self._known:
                self._known[key] = self._read(key)
        self._listed_at = time.monotonic()

    def _read(self, key: str) -> Checkpoint | None:
        try:
            checkpoint = Checkpoint.from_dict(json.loads(self.store.get(key)))
        except (ValueError, KeyError, OSError):
            log.warning("unreadable audit checkpoint object: %s", key)
            return None
        return checkpoint

    def stored(self, refresh: bool = True) -> list[Checkpoint]:
        """Every stored checkpoint, by sequence (unreadable objects are left out and logged)."""
        self._refresh(refresh)
        found = [c for c in self._known.values() if c is not None]
        return sorted(found, key=lambda c: (c.seq, c.signed_at))

    def signature_valid(self, checkpoint: Checkpoint) -> bool:
        """Ed25519 check of a stored checkpoint under this key, once per process."""
        key = (checkpoint.seq, checkpoint.head_hash, checkpoint.signed_at, checkpoint.signature)
        if key not in self._signature_ok:
            self._signature_ok[key] = checkpoint.signature_valid(self.public_key)
        return self._signature_ok[key]

    def compared(self, checkpoint: Checkpoint) -> bool:
        """Did a successful verification of this process compare the log with it?"""
        return (checkpoint.seq, checkpoint.head_hash) in self._compared

    def mark_compared(self, checkpoints: list[Checkpoint]) -> None:
        self._compared.update((c.seq, c.head_hash) for c in checkpoints)

    def unreadable(self) -> list[str]:
        return sorted(k for k, c in self._known.items() if c is None)

    def latest(self, refresh: bool = True) -> Checkpoint | None:
        found = self.stored(refresh)
        return found[-1] if found else None

    def check_extends(self, session: Session, head_seq: int) -> Problem | None:
        """Does the chain up to ``head_seq`` extend the newest signed head? (the caller holds
        the chain's lock, or reads a head already committed)."""
        last = self.latest(refresh=False)
        if last is None:
            return walk_from(session, until_seq=head_seq).problem
        stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.seq == last.seq))
        if stored is None:
            return Problem(last.seq, "truncated")
        if stored != last.head_hash:
            return Problem(last.seq, "checkpoint_mismatch")
        if head_seq <= last.seq:
            return None
        return walk_from(session, last.seq, last.head_hash, until_seq=head_seq).problem

    def sign_head(self, session: Session, seq: int, head_hash: str) -> Checkpoint | None:
        """Sign and store ``(seq, head_hash)`` if it extends what was signed; else record the
        tamper and sign nothing."""
        problem = self.check_extends(session, seq) if self.consistency_check else None
        if problem is not None:
            self.record_tamper(problem)
            return None
        return self._sign_and_write(seq, head_hash)

    def _sign_and_write(self, seq: int, head_hash: str) -> Checkpoint:
        checkpoint = self.sign(seq, head_hash)
        self.write(checkpoint)
        return checkpoint

    def record_tamper(self, problem: Problem) -> None:
        log.critical(
            "AUDIT TAMPER: %s at sequence %d; no checkpoint signed", problem.kind, problem.seq
        )
        body = {**problem.as_dict(), "noticed_at": datetime.now(UTC).isoformat()}
        key = f"{_TAMPER_PREFIX}{problem.seq:015d}-{problem.kind}.json"
        self.store.put_once(key, json.dumps(body, sort_keys=True).encode())
        self._tampers_at = -1e9

    def tamper_records(self) -> list[Problem]:
        """Every tamper the signers recorded (read from the store at most every 2 s)."""
        if time.monotonic() - self._tampers_at >= _REFRESH_S:
            found = []
            for key in self.store.keys(_TAMPER_PREFIX):
                try:
                    data = json.loads(self.store.get(key))
                    found.append(Problem(int(data["seq"]), str(data["kind"])))
                except (ValueError, KeyError, OSError):
                    found.append(Problem(0, "tamper_recorded"))
            self._tampers, self._tampers_at = found, time.monotonic()
        return list(self._tampers)

    def checkpoint_head(self, session: Session) -> Checkpoint | None:
        """Sign and store the current head if it extends the last signed one (the periodic
        catch-up; no-op on an empty chain)."""
        head = session.execute(
            select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
        ).first()
        if head is None:
            return None
        self._refresh(force=True)
        return self.sign_head(session, int(head[0]), str(head[1]))


def anchored(factory: sessionmaker[Session], anchor: Anchor) -> sessionmaker[Session]:
    """The same session factory, whose sessions checkpoint the chain after each commit."""
    kw = dict(factory.kw)
    kw["info"] = {**kw.get("info", {}), _ANCHOR_KEY: anchor}
    return sessionmaker(class_=factory.class_, **kw)


@event.listens_for(Session, "before_commit")
def _check_before_commit(session: Session) -> None:
    """The consistency check, in the committing transaction (which holds the chain's lock)."""
    head = session.info.get(HEAD_INFO_KEY)
    anchor: Anchor | None = session.info.get(_ANCHOR_KEY)
    if head is None or anchor is None or not anchor.consistency_check:
        return
    try:
        session.info[_VERDICT_KEY] = anchor.check_extends(session, head[0])
    except Exception as exc:  # never fail the commit; the reaper's checkpoint catches up
        log.error("audit consistency check not run: %s", type(exc).__name__)
        session.info[_VERDICT_KEY] = _NOT_CHECKED


@event.listens_for(Session, "after_commit")
def _checkpoint_after_commit(session: Session) -> None:
    head = session.info.pop(HEAD_INFO_KEY, None)
    verdict = session.info.pop(_VERDICT_KEY, None)
    anchor: Anchor | None = session.info.get(_ANCHOR_KEY)
    if head is None or anchor is None or verdict is _NOT_CHECKED:
        return
    try:
        if isinstance(verdict, Problem):
            anchor.record_tamper(verdict)
        else:
            anchor._sign_and_write(*head)
    except Exception as exc:  # the commit stands; the next checkpoint covers these events
        log.error("audit checkpoint not written: %s", type(exc).__name__)


@event.listens_for(Session, "after_soft_rollback")
def _drop_head(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:
        session.info.pop(HEAD_INFO_KEY, None)
        session.info.pop(_VERDICT_KEY, None)


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
