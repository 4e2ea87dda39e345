"""The console's second factor: TOTP (RFC 6238, ``pyotp``) and one-time recovery codes.

Required for admins (an admin signs in to enrol before anything else opens), optional for the
other roles. The secret is stored encrypted; a code is accepted once (the last accepted time
step is kept, so a code seen over a shoulder cannot be replayed within its 30 s); recovery codes
are stored as keyed hashes and each works once. Functions flush; the handler commits.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import pyotp
import segno
from sqlalchemy.orm import Session

from service.audit import append_event
from service.core.config import Settings
from service.core.errors import invalid
from service.core.security import decrypt, encrypt
from service.db.base import utcnow
from service.db.enums import Role
from service.db.tables import ConsoleUser
from service.erasure.notes import text_digest
from service.web.accounts import user_actor

RECOVERY_CODES = 10
ISSUER = "lethe"


def required(user: ConsoleUser) -> bool:
    return user.role == Role.admin


def enabled(user: ConsoleUser) -> bool:
    return user.totp_enabled_at is not None and user.totp_secret_encrypted is not None


def _secret(settings: Settings, user: ConsoleUser) -> str:
    assert user.totp_secret_encrypted is not None
    return decrypt(settings, user.totp_secret_encrypted).decode()


def start_enrolment(settings: Settings, user: ConsoleUser) -> str:
    """A new secret (not active until confirmed with a code); returns it for display."""
    secret = pyotp.random_base32()
    user.totp_secret_encrypted = encrypt(settings, secret.encode())
    user.totp_enabled_at = None
    user.totp_last_step = None
    return secret


def pending_secret(settings: Settings, user: ConsoleUser) -> str | None:
    if user.totp_secret_encrypted is None or enabled(user):
        return None
    return _secret(settings, user)


def qr_svg(secret: str, account: str) -> str:
    """The enrolment link as an inline SVG QR code (no image request, nothing leaves lethe)."""
    uri = pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)
    svg: str = segno.make(uri, error="m").svg_inline(scale=4, title="QR code for your app")
    return svg.replace("<svg ", '<svg role="img" aria-label="QR code for your app" ', 1)


def _accept_code(secret: str, user: ConsoleUser, code: str, now: datetime) -> bool:
    digits = "".join(code.split())
    if len(digits) != 6 or not digits.isdigit():
        return False
    totp = pyotp.TOTP(secret)
    step = totp.timecode(now)
    # The code of the step before or after is accepted too (clocks drift), never one twice.
    for candidate in (step, step - 1, step + 1):
        if user.totp_last_step is not None and candidate <= user.totp_last_step:
            continue
        if secrets.compare_digest(totp.generate_otp(candidate), digits):
            user.totp_last_step = candidate
            return True
    return False


def _new_recovery_codes(user: ConsoleUser) -> list[str]:
    codes = ["-".join(secrets.token_hex(2) for _ in range(3)) for _ in range(RECOVERY_CODES)]
    user.recovery_code_hashes = [text_digest(c, "recovery-code") for c in codes]
    return codes


def confirm_enrolment(
    session: Session, settings: Settings, user: ConsoleUser, code: str
) -> list[str]:
    """Turn the pending secret on with a first code; returns the recovery codes (shown once)."""
    secret = pending_secret(settings, user)
    if secret is None:
        raise invalid("no_enrolment", "start the set-up of the authenticator app first")
    if not _accept_code(secret, user, code, utcnow()):
        raise invalid("wrong_code", "the code is not right: check the app and the clock")
    user.totp_enabled_at = utcnow()
    codes = _new_recovery_codes(user)
    session.flush()
    _event(session, user, "user.second_factor_enabled")
    return codes


def disable(session: Session, user: ConsoleUser) -> None:
    if required(user):
        raise invalid("second_factor_required", "admins must keep a second factor")
    user.totp_secret_encrypted = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    user.recovery_code_hashes = []
    session.flush()
    _event(session, user, "user.second_factor_disabled")


def check(session: Session, settings: Settings, user: ConsoleUser, code: str) -> bool:
    """A code from the app, or an unused recovery code (which is then spent)."""
    if not enabled(user):
        return False
    if _accept_code(_secret(settings, user), user, code, utcnow()):
        session.flush()
        return True
    digest = text_digest(code.strip().lower(), "recovery-code")
    if digest in user.recovery_code_hashes:
        user.recovery_code_hashes = [h for h in user.recovery_code_hashes if h != digest]
        session.flush()
        _event(session, user, "user.recovery_code_used", left=len(user.recovery_code_hashes))
        return True
    return False


def _event(session: Session, user: ConsoleUser, action: str, **details: object) -> None:
    append_event(
        session,
        actor=user_actor(user.id, user.role),
        action=action,
        target_type="user",
        target_id=str(user.id),
        details=dict(details),
    )
