"""Plain words for data-protection officers: the deadline, the outcome, each event and each
certificate, said without the engine room (no shard, slice, VACUUM, write-ahead log,
bit-exact, lineage hash or error code). The technical figures stay in
``service.reports.words.certificate_facts`` ("details for engineers") and in the JSON.

Used by the console's pages and by the PDF alike, so both say the same thing; the day count is
``service.erasure.deadlines.days_left`` for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.erasure.deadlines import days_left
from service.erasure.decisions import LEGAL_GROUNDS, REJECTION_REASONS, VERIFICATION_METHODS

OPEN = ("received", "approved", "in_progress")
STATUS_WORDS = {
    "received": "received, waiting for a decision",
    "approved": "approved, work about to start",
    "in_progress": "being carried out",
    "completed": "completed",
    "failed": "failed",
    "rejected": "rejected",
    "cancelled": "cancelled",
}


def _day(moment: datetime | str | None) -> str:
    if moment is None:
        return "-"
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.strftime("%d %B %Y").lstrip("0")


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


@dataclass(frozen=True)
class Deadline:
    # "ok", "warn", "bad" or "neutral": how the console and the PDF colour it.
    tone: str
    text: str
    # Set once answered: True met, False missed; None while open.
    met: bool | None


def deadline(
    status: str,
    due_at: datetime,
    closed_at: datetime | None,
    overdue: bool,
    now: datetime | None = None,
) -> Deadline:
    """The deadline in words, by status: open (days left, or overdue by), completed or failed
    (met or missed), rejected or cancelled (answered on a date)."""
    if status in OPEN:
        left = days_left(due_at, now)
        if overdue:
            late = max(-left, 0)
            text = f"Open and overdue: the deadline was {_day(due_at)}"
            text += f" ({_days(late)} ago)." if late else " (today)."
            return Deadline("bad", text, None)
        tone = "warn" if left <= 7 else "ok"
        return Deadline(tone, f"Open: {_days(left)} left (due {_day(due_at)}).", None)
    answered = _day(closed_at)
    if status in ("rejected", "cancelled"):
        when = "after the deadline" if overdue else "within the deadline"
        return Deadline("neutral", f"Answered on {answered} ({status}), {when}.", not overdue)
    if status == "failed":
        # The person was not answered: lethe could not carry the request out.
        text = f"Not met: the work failed on {answered} (due {_day(due_at)})."
        return Deadline("bad", text, False)
    if overdue:
        return Deadline(
            "bad", f"Deadline missed: answered on {answered}, due {_day(due_at)}.", False
        )
    return Deadline("ok", f"Deadline met: answered on {answered}, due {_day(due_at)}.", True)


def outcome_words(status: str, outcome: str | None) -> str:
    if status == "completed" and outcome == "no_data_held":
        return "completed: no personal data held"
    if status == "completed":
        return "completed: erased"
    return STATUS_WORDS.get(status, status)


def certificate_status(status: str, outcome: str | None, certificates: int) -> str | None:
    """What to say about certificates when there are none to show, or why there are none."""
    if certificates:
        return None
    return {
        "received": "No certificate yet: the request has not been decided.",
        "approved": "No certificate yet: the work is about to start.",
        "in_progress": "No certificate yet: each model's certificate is issued as it finishes.",
        "failed": "No certificate: the work failed before every model was done. Look at the "
        "timeline and ask an engineer.",
        "rejected": "No certificate: the request was rejected, so nothing was erased.",
        "cancelled": "No certificate: the request was cancelled, so nothing was erased.",
    }.get(
        status,
        "No model was in scope, so there was nowhere to look."
        if outcome == "no_data_held"
        else "No certificate was issued.",
    )


def certificate_words(cert: Mapping[str, Any]) -> str:
    """What was done to one model, for a DPO."""
    kind = cert.get("kind")
    if kind == "no_data_held":
        return str(cert.get("plain_words") or "This model held no record of this person.")
    if kind == "exact_retrain":
        return _exact_words(cert)
    if kind == "conformal_risk":
        alpha, delta = float(cert.get("alpha", 0)), float(cert.get("delta", 0))
        text = (
            "The model itself cannot be retrained by lethe, so every answer it gives is now "
            f"checked for this person before it is sent: at most {_pct(alpha)} of answers that "
            f"would reveal them can get through, with {_pct(1 - delta)} confidence."
        )
    else:
        text = (
            "Every answer of the model is now checked for this person before it is sent, but "
            "lethe could not yet compute a guarantee of how many could get through."
        )
    if cert.get("interim"):
        text += (
            " This is an interim measure: the person's data are to be removed from the model "
            f"itself by {_day(str(cert.get('exact_removal_due_at')))}."
        )
    return text


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def _exact_words(cert: Mapping[str, Any]) -> str:
    erased = cert.get("records_erased") or {}
    n = int(erased.get("train", 0)) + int(erased.get("holdout", 0))
    if not cert.get("shards_retrained") and not cert.get("slices"):
        text = (
            f"The person's {n} record(s) were deleted. No version of the model had learned from "
            "them, so nothing had to be retrained."
        )
    else:
        text = (
            f"The person's {n} record(s) were deleted, and the part of the model that saw this "
            "person's data was retrained without them."
        )
        check = cert.get("determinism_check")
        if check == "bit_exact":
            text += " An independent retraining matched it exactly."
        elif check == "mismatch":
            text += " WARNING: an independent retraining did NOT match it; ask an engineer."
    physical = cert.get("physical_deletion")
    if physical:
        days = physical.get("backup_retention_days")
        text += " The database space was cleared."
        if physical.get("keys_destroyed"):
            # Only certificates whose purge destroyed the person's key say so (exact.finish).
            when = physical.get("keys_destroyed_at")
            text += (
                " The person's records were stored encrypted under their own key, and that "
                f"key was destroyed{f' on {_day(when)}' if when else ''}: the copies left in "
                "database backups can no longer be read."
            )
        else:
            text += " Copies may remain in database backups until they expire" + (
                f" ({_days(int(days))})." if days is not None else " (retention not stated)."
            )
    hosts = cert.get("hosts") or {}
    if hosts.get("words"):  # a fine-tune's copies on every server that serves it
        text += " " + str(hosts["words"])
    warnings = cert.get("warnings") or []
    if warnings:
        text += (
            f" An engineer should look at {len(warnings)} warning(s) in the details for engineers."
        )
    return text


def engineer_facts(cert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A certificate's figures (``words.certificate_facts``) and its warnings, verbatim."""
    from service.reports.words import certificate_facts

    return certificate_facts(cert) + [("Warning", str(w)) for w in cert.get("warnings") or []]


def _received(d: Mapping[str, Any]) -> str:
    scope = d.get("scope")
    where = "every model" if scope in (None, "all") else ", ".join(map(str, scope))
    ground = LEGAL_GROUNDS.get(str(d.get("legal_ground")), "")
    return f"Request received for {where}." + (f" Ground: {ground}." if ground else "")


def _rejected(d: Mapping[str, Any]) -> str:
    code = str(d.get("reason_code") or "")
    return f"Request rejected: {REJECTION_REASONS.get(code, 'reason recorded')}."


def _verified(d: Mapping[str, Any]) -> str:
    method = str(d.get("method", ""))
    return f"Identity of the requester verified: {VERIFICATION_METHODS.get(method, method)}."


def _completed(d: Mapping[str, Any]) -> str:
    what = ": no personal data held" if d.get("outcome") == "no_data_held" else ""
    late = "after" if d.get("overdue") else "within"
    return f"Request completed{what}, {late} the deadline."


def _planned(d: Mapping[str, Any]) -> str:
    if d.get("strategy") == "exact_retrain":
        return f"{d.get('model')}: work planned to remove the person's records."
    return f"{d.get('model')}: answers to be checked for this person."


def _certificate(d: Mapping[str, Any]) -> str:
    cert = d.get("certificate") or {}
    return f"{cert.get('model')}: certificate issued. {certificate_words(cert)}"


_WORDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "request.received": _received,
    "request.rejected": _rejected,
    "request.identity_verified": _verified,
    "request.deadline_extended": lambda d: (
        f"Deadline extended by {d.get('months')} month(s) to {_day(d.get('due_at'))}."
    ),
    "request.completed": _completed,
    "action.planned": _planned,
    "action.completed": lambda d: f"{d.get('model')}: done.",
    "action.skipped": lambda d: f"{d.get('model')}: held no record of this person; nothing to do.",
    "action.failed": lambda d: (
        f"{d.get('model') or 'A model'}: the work failed (details for engineers below)."
    ),
    "records.erased": lambda d: (
        f"{d.get('model')}: the content of {d.get('records')} record(s) was deleted."
    ),
    "storage.vacuumed": lambda d: "The database space that held the deleted records was cleared.",
    "storage.vacuum_failed": lambda d: (
        "Clearing the database space failed; an engineer must look (details below)."
    ),
    "rules.activated": lambda d: f"{d.get('model')}: checking of answers switched on.",
    "rules.version_activated": lambda d: (
        f"{d.get('model')}: checking of answers switched on for "
        f"{len(d.get('requests_activated') or [])} request(s); certificates follow."
    ),
    "artifacts.deletion_failed": lambda d: (
        f"{d.get('model')}: deleting the model's earlier saved copies, which learned from this "
        f"person's data, did not work this time (try {d.get('attempt')}); lethe keeps trying "
        "by itself, and the request stays open until they are deleted."
    ),
    "certificate.issued": _certificate,
}


def event_words(event: Mapping[str, Any]) -> str:
    """One sentence for one audit event, for a DPO."""
    action = str(event.get("action", ""))
    if action in _SIMPLE:
        return _SIMPLE[action]
    words = _WORDS.get(action)
    if words is not None:
        return words(event.get("details") or {})
    return action.replace(".", " ").replace("_", " ").capitalize() + "."


_SIMPLE: dict[str, str] = {
    "request.approved": "Request approved.",
    "request.cancelled": "Request cancelled.",
    "request.started": "Work started.",
    "request.failed": "Request failed.",
    "request.note_added": "Note added.",
    "host.purge_confirmed": "A server confirmed it deleted its copies of the old model version.",
    "host.purge_absent": (
        "A server did not confirm in time and is recorded as absent; it deletes its copies of "
        "the old model version when it comes back."
    ),
}
