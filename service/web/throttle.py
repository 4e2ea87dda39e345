"""Sign-in throttling, per account and per network address, with lockout and back-off.

Checked before any password is: a locked account or address is refused at once (no argon2
work, no hint whether the account exists). Failures are counted under keyed hashes of the
e-mail address and of the client address, never the values themselves. After
``ACCOUNT_FAILURES`` failures on one account (``ADDRESS_FAILURES`` from one address) within
``WINDOW``, the key is locked for ``BASE_LOCK``, doubling with each further lockout up to
``MAX_LOCK``. A successful sign-in clears the account's count. Functions flush; the handler
commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from service.db.base import utcnow
from service.db.tables import SignInThrottle
from service.erasure.notes import text_digest
from service.web.accounts import normalise_email

ACCOUNT_FAILURES = 5
ADDRESS_FAILURES = 20
WINDOW = timedelta(minutes=15)
BASE_LOCK = timedelta(minutes=1)
MAX_LOCK = timedelta(hours=1)


def account_key(email: str) -> str:
    return text_digest(normalise_email(email), "signin-account")


def address_key(address: str) -> str:
    return text_digest(address, "signin-address")


@dataclass(frozen=True)
class Keys:
    account: str
    address: str

    @classmethod
    def of(cls, email: str, address: str) -> Keys:
        return cls(account_key(email), address_key(address))


def _row(session: Session, key: str) -> SignInThrottle:
    session.execute(
        insert(SignInThrottle)
        .values(key_hash=key, failures=0, lockouts=0)
        .on_conflict_do_nothing(index_elements=["key_hash"])
    )
    row = session.scalar(
        select(SignInThrottle).where(SignInThrottle.key_hash == key).with_for_update()
    )
    assert row is not None
    return row


def locked_until(session: Session, keys: Keys, now: datetime | None = None) -> datetime | None:
    """When the later of the two locks ends, or None when sign-in may be tried."""
    moment = now or utcnow()
    until = session.scalars(
        select(SignInThrottle.locked_until).where(
            SignInThrottle.key_hash.in_([keys.account, keys.address]),
            SignInThrottle.locked_until > moment,
        )
    ).all()
    return max((u for u in until if u is not None), default=None)


def lock_length(lockouts: int) -> timedelta:
    """Back-off: 1 min, 2, 4, … for the 1st, 2nd, 3rd lockout, at most an hour."""
    length: timedelta = BASE_LOCK * (2 ** max(lockouts - 1, 0))
    return min(length, MAX_LOCK)


def _count(row: SignInThrottle, limit: int, now: datetime) -> bool:
    """One more failure on this key; True when it now locks."""
    if row.last_failure_at is None or row.last_failure_at + WINDOW < now:
        row.failures = 0
    row.failures += 1
    row.last_failure_at = now
    if row.failures < limit:
        return False
    row.lockouts += 1
    row.failures = 0
    row.locked_until = now + lock_length(row.lockouts)
    return True


def record_failure(session: Session, keys: Keys) -> datetime | None:
    """Count a failed sign-in on both keys; the lock's end when this failure set one."""
    now = utcnow()
    locked = [
        row.locked_until
        for row, limit in (
            (_row(session, keys.account), ACCOUNT_FAILURES),
            (_row(session, keys.address), ADDRESS_FAILURES),
        )
        if _count(row, limit, now)
    ]
    session.flush()
    return max((u for u in locked if u is not None), default=None)


def record_success(session: Session, keys: Keys) -> None:
    """The account's failures are forgiven; its lockout history (the back-off) is kept."""
    row = session.get(SignInThrottle, keys.account, with_for_update=True)
    if row is not None:
        row.failures = 0
        row.locked_until = None
        session.flush()
