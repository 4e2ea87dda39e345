"""Calling the API in tests: a bearer header, and what the outbox sent after commits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.tables import AuditEvent, ErasureRequest


@dataclass
class SentTasks:
    """What the outbox sent after commits (the API and tasks send by name, never import)."""

    sent: list[tuple[str, list[Any], float | None]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.sent]

    def pop(self, name: str) -> list[list[Any]]:
        matching = [args for n, args, _ in self.sent if n == name]
        self.sent = [s for s in self.sent if s[0] != name]
        return matching


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def cli_json(result: Any) -> Any:
    """The ``--json`` output of an operator CLI run that succeeded."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def requests_and_events(session: Session) -> tuple[int, int]:
    """How many erasure requests and audit events exist: what a refused call must not change."""
    return (
        session.scalar(select(func.count()).select_from(ErasureRequest)) or 0,
        session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
    )
