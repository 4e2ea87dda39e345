"""Who did it, in words: the audit log names actors as ``role:user-1a2b3c4d`` (a console
account), ``role:name`` (an API token) or a process (``worker``, ``reaper``, ``cli``); DPO pages
and reports show a person's display name, a token as a token, a process as lethe."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import cast, select
from sqlalchemy.orm import Session
from sqlalchemy.types import String

from service.db.tables import ConsoleUser

_USER = re.compile(r"^(?P<role>[a-z_]+):user-(?P<prefix>[0-9a-f]{8})$")
_TOKEN = re.compile(r"^(?P<role>[a-z_]+):(?P<name>.+)$")
ROLE_WORDS = {
    "dpo": "data-protection officer",
    "ml_engineer": "ML engineer",
    "auditor": "auditor",
    "admin": "admin",
}
PROCESSES = {
    "worker": "lethe (background work)",
    "reaper": "lethe (recovery of stalled work)",
    "system": "lethe (automatic approval policy)",
    "cli": "an administrator on the server (lethe command)",
    "setup": "lethe (first start)",
    "demo": "lethe demo",
}


def display_names(session: Session, actors: Iterable[str]) -> dict[str, str]:
    """Each actor string mapped to the words to show for it."""
    wanted = set(actors)
    prefixes = {m["prefix"] for a in wanted if (m := _USER.match(a))}
    people: dict[str, str] = {}
    if prefixes:
        rows = session.execute(
            select(ConsoleUser.id, ConsoleUser.display_name, ConsoleUser.email).where(
                cast(ConsoleUser.id, String).op("~")(f"^({'|'.join(sorted(prefixes))})")
            )
        ).all()
        for user_id, name, email in rows:
            people[str(user_id)[:8]] = name or email.split("@")[0]
    return {actor: _words(actor, people) for actor in wanted}


def _words(actor: str, people: dict[str, str]) -> str:
    user = _USER.match(actor)
    if user:
        role = ROLE_WORDS.get(user["role"], user["role"])
        name = people.get(user["prefix"])
        return f"{name} ({role})" if name else f"a former account ({role})"
    if actor in PROCESSES:
        return PROCESSES[actor]
    if actor.startswith("invite:"):
        return "the invited person"
    token = _TOKEN.match(actor)
    if token:
        role = ROLE_WORDS.get(token["role"], token["role"])
        return f"API token “{token['name']}” ({role})"
    return actor
