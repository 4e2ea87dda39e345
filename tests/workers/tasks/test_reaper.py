"""The reaper's pass signs a checkpoint of the audit chain's head."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from service.audit import verify_chain


def test_reaper_signs_a_checkpoint_of_the_head(
    session: Session, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events committed by a process that died before signing are covered by the reaper."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from service.audit import append_event
    from service.audit.anchor import Anchor
    from service.audit.store import FolderStore
    from workers.base import DbTask
    from workers.tasks.reaper import reap_stuck_jobs

    anchor = Anchor(Ed25519PrivateKey.generate(), FolderStore(tmp_path / "checkpoints"))
    monkeypatch.setattr(DbTask, "_anchor", anchor)
    append_event(session, actor="t", action="test.event", target_type="t", target_id="1")
    session.commit()  # not anchored: as if the process died before it signed
    assert anchor.latest() is None
    reap_stuck_jobs()
    head = verify_chain(session)
    latest = anchor.latest()
    assert latest is not None and latest.signature_valid(anchor.public_key)
    assert (latest.seq, latest.head_hash) == (head.last_seq, head.last_hash)
