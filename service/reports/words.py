"""Audit events and certificates in plain words, for the console and the PDF reports.

Everything here reads the JSON-able dicts of the audit log (``reports.event_dict``) only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from service.erasure.decisions import LEGAL_GROUNDS, REJECTION_REASONS, VERIFICATION_METHODS

_SIMPLE: dict[str, str] = {
    "request.received": "Request received",
    "request.approved": "Request approved",
    "request.rejected": "Request rejected",
    "request.cancelled": "Request cancelled",
    "request.started": "Work started",
    "request.completed": "Request completed",
    "request.failed": "Request failed",
    "request.reopened": "Request re-opened: a check of the model's retraining failed",
    "action.reopened": "A model's action re-opened: the independent check of its retraining "
    "did not match",
    "request.identity_verified": "Identity of the requester verified",
    "request.deadline_extended": "Deadline extended",
}


def short_hash(value: object, n: int = 12) -> str:
    text = str(value or "")
    return text[:n] + "…" if len(text) > n else text


def fmt_time(value: str | datetime | None) -> str:
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _num(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "-"


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


def describe_event(event: Mapping[str, Any]) -> str:
    """One sentence for one audit event."""
    action = str(event.get("action", ""))
    d: Mapping[str, Any] = event.get("details") or {}
    sentence = _SENTENCES.get(action)
    if sentence is not None:
        return sentence(d)
    return _SIMPLE.get(action, action.replace(".", " ").replace("_", " ").capitalize() + ".")


def _received(d: Mapping[str, Any]) -> str:
    scope = d.get("scope")
    scope_text = "every model" if scope in (None, "all") else ", ".join(map(str, scope))
    ground = d.get("legal_ground")
    ground_text = f"; ground {LEGAL_GROUNDS.get(str(ground), ground)}" if ground else ""
    return f"Request received for {scope_text}; due {fmt_time(d.get('due_at'))}{ground_text}."


def _rejected(d: Mapping[str, Any]) -> str:
    if not d.get("reason_code"):
        return _SIMPLE["request.rejected"]
    code = str(d["reason_code"])
    return f"Request rejected: {REJECTION_REASONS.get(code, code)}."


def _identity_verified(d: Mapping[str, Any]) -> str:
    method = str(d.get("method", ""))
    return f"Identity verified: {VERIFICATION_METHODS.get(method, method)}."


def _deadline_extended(d: Mapping[str, Any]) -> str:
    return (
        f"Deadline extended by {d.get('months')} month(s) to {fmt_time(d.get('due_at'))} "
        f"(Art. 12(3))."
    )


def _completed(d: Mapping[str, Any]) -> str:
    late = "after" if d.get("overdue") else "within"
    return f"Request completed {late} the deadline."


def _planned(d: Mapping[str, Any]) -> str:
    if d.get("strategy") == "exact_retrain":
        shards = ", ".join(str(s) for s in d.get("shards", [])) or "none"
        return f"{d.get('model')}: exact retraining planned (shards {shards})."
    return f"{d.get('model')}: verifier rules planned."


def _action_completed(d: Mapping[str, Any]) -> str:
    how = "exact retraining" if d.get("strategy") == "exact_retrain" else "verifier rules"
    return f"{d.get('model')}: done ({how})."


def _vacuumed(d: Mapping[str, Any]) -> str:
    removed = sum(int(r.get("removed", 0)) for r in d.get("relations") or [])
    return (
        f"{d.get('method', 'VACUUM')} of {', '.join(d.get('tables') or [])}: "
        f"{removed} old row version(s) physically removed from the table's pages."
    )


def _rules_activated(d: Mapping[str, Any]) -> str:
    since = f" since {fmt_time(d['active_since'])}" if d.get("active_since") else ""
    later = d.get("now_served_by_version")
    now = f"; rule-set version {later} holds them now" if later is not None else ""
    return (
        f"{d.get('model')} screens every answer against {d.get('rule_count')} rules "
        f"(rule-set version {d.get('version')}){since}{now}."
    )


def _deletion_failed(d: Mapping[str, Any]) -> str:
    return (
        f"{d.get('model')}: deleting the checkpoints job {d.get('job_id')} superseded failed "
        f"({d.get('error')}), attempt {d.get('attempt')}; retried in {d.get('retry_in_s')} s. "
        "No certificate until they are deleted."
    )


def _rules_version_activated(d: Mapping[str, Any]) -> str:
    return (
        f"{d.get('model')} now screens every answer against {d.get('rule_count')} rules "
        f"(rule-set version {d.get('version')}), newly for "
        f"{len(d.get('requests_activated') or [])} request(s); their certificates follow."
    )


def _keys_destroyed(d: Mapping[str, Any]) -> str:
    keys = ", ".join(str(k) for k in d.get("key_ids") or [])
    return (
        f"The request's encryption key ({keys}) was destroyed at "
        f"{fmt_time(d.get('destroyed_at'))}: the identifier, names, facts, reasons and notes "
        "it protected can no longer be read anywhere, including database backups. The "
        "encrypted forget content and reason were also deleted from the request's record."
    )


def _keys_created(d: Mapping[str, Any]) -> str:
    del d
    return (
        "This request was filed before each request had its own encryption key. It was given "
        "one, and everything lethe keeps of the requester for it was encrypted again under "
        "that key, so that it is destroyed with the key when the retention period ends."
    )


_SENTENCES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "request.received": _received,
    "request.rejected": _rejected,
    "request.identity_verified": _identity_verified,
    "request.deadline_extended": _deadline_extended,
    "request.completed": _completed,
    "request.keys_destroyed": _keys_destroyed,
    "request.keys_created": _keys_created,
    "action.planned": _planned,
    "action.completed": _action_completed,
    "action.skipped": lambda d: f"{d.get('model')}: nothing to do (no records of this subject).",
    "action.failed": lambda d: f"A model's action failed ({d.get('error_code')}).",
    "records.erased": lambda d: (
        f"{d.get('model')}: content of {d.get('records')} record(s) deleted."
    ),
    "storage.vacuumed": _vacuumed,
    "storage.vacuum_failed": lambda d: (
        f"VACUUM of {', '.join(d.get('tables') or [])} failed ({d.get('error')})."
    ),
    "rules.activated": _rules_activated,
    "rules.version_activated": _rules_version_activated,
    "artifacts.deletion_failed": _deletion_failed,
    "certificate.issued": lambda d: _certificate_event(d.get("certificate") or {}),
}


def _certificate_event(cert: Mapping[str, Any]) -> str:
    model, kind = cert.get("model"), cert.get("kind")
    if kind == "exact_retrain":
        shards = cert.get("shards_retrained") or []
        slices = cert.get("slices")
        if not shards and not slices:
            return f"{model}: certificate issued; no shard needed retraining."
        check = {
            "bit_exact": "identical, bit for bit, to training without this person",
            "mismatch": "WARNING: NOT identical to training without this person",
        }.get(str(cert.get("determinism_check")), "bit-for-bit check not run (policy)")
        if slices:
            return (
                f"The fine-tune of {model} retrained from slice "
                f"{slices.get('first_affected_slice')} of {slices.get('slices_total')} — {check}."
            )
        parts = "; ".join(
            f"Shard {s.get('shard')} of {model} retrained from slice "
            f"{s.get('first_affected_slice')} of {s.get('slices_total')}"
            for s in shards
        )
        return f"{parts} — {check}."
    if kind == "conformal_risk":
        return (
            f"{model} now screens every answer against rule-set version "
            f"{cert.get('rule_set_version')}; at most {_pct(float(cert.get('alpha', 0)))} of "
            f"leaking answers can get past, with {_pct(1 - float(cert.get('delta', 0)))} "
            f"confidence."
        )
    return f"{model}: rules active, but no guarantee could be certified ({cert.get('reason')})."


def certificate_facts(cert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The numbers of a certificate as (label, value) rows."""
    kind = cert.get("kind")
    rows: list[tuple[str, str]] = [("Kind", str(kind)), ("Model", str(cert.get("model")))]
    if kind == "exact_retrain":
        return rows + _exact_facts(cert)
    return rows + _conformal_facts(cert)


def _exact_facts(cert: Mapping[str, Any]) -> list[tuple[str, str]]:
    erased = cert.get("records_erased") or {}
    rows = [
        ("Records erased", f"{erased.get('train', 0)} train, {erased.get('holdout', 0)} held out"),
        ("Version", f"{cert.get('version_before')} -> {cert.get('version_after')}"),
        ("Bit-exact check", str(cert.get("determinism_check"))),
    ]
    physical = cert.get("physical_deletion")
    if physical:
        days = physical.get("backup_retention_days")
        rows.append(
            (
                "Physical deletion",
                f"{physical.get('method')} after the purge; copies in WAL and backups "
                f"until retention ends ({'unknown' if days is None else f'{days} days'})",
            )
        )
        for key in physical.get("keys_destroyed") or []:
            rows.append(("Key destroyed", str(key)))
        if physical.get("keys_destroyed") and physical.get("keys_destroyed_at"):
            rows.append(("Keys destroyed at", str(physical["keys_destroyed_at"])))
    rows += _host_facts(cert.get("hosts") or {})
    for s in cert.get("shards_retrained") or []:
        rows += _shard_facts(s)
    if cert.get("slices"):
        rows += _slices_facts(cert["slices"])
    return rows


def _host_facts(hosts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Where a fine-tune's local copies were deleted: the count, then each host."""
    if not hosts.get("total"):
        return []
    rows = [("Servers confirmed", f"{hosts.get('confirmed')} of {hosts.get('total')}")]
    for server in hosts.get("servers") or []:
        rows.append(
            (f"  {server.get('host')}", f"{server.get('status')} {server.get('settled_at') or ''}")
        )
    return rows


def _shard_facts(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One retrained shard of a sharded classifier."""
    exact = (s.get("exactness") or {}).get("status")
    return [
        (
            f"Shard {s.get('shard')}",
            f"retrained from slice {s.get('first_affected_slice')} of {s.get('slices_total')} "
            f"({s.get('slices_retrained')} slice(s)); check: {exact}",
        ),
        ("  checkpoint before", str(s.get("checkpoint_before"))),
        ("  checkpoint after", str(s.get("checkpoint_after"))),
        ("  lineage hash", str(s.get("lineage_hash"))),
        (
            "  accuracy before -> after",
            f"{_num(s.get('accuracy_before'))} -> {_num(s.get('accuracy_after'))} "
            "(held-out subjects)",
        ),
        (
            "  checkpoints destroyed",
            ", ".join(short_hash(c, 16) for c in s.get("superseded_checkpoints") or []) or "none",
        ),
    ]


_CONFORMAL_FACTS = [
    ("alpha", "α (miss-rate target)"),
    ("delta", "δ (failure probability)"),
    ("n", "n (calibration leaks)"),
    ("threshold", "λ (threshold)"),
    ("empirical_miss_rate", "Empirical miss rate"),
    ("miss_rate_upper_bound", "Upper confidence bound"),
    ("budget", "B (regeneration budget)"),
    ("alpha_b", "α_B"),
    # What serving does now, certified or not (the plain words above say why).
    ("refinement_rule", "Refinement rule in force"),
    ("serving_budget", "Regenerations allowed"),
    ("calibration_stage", "Calibration stage"),
    ("false_flag_rate", "False-flag rate (retained)"),
    ("rule_set_version", "Rule-set version"),
]


def _conformal_facts(cert: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = [(label, _fact(cert[key])) for key, label in _CONFORMAL_FACTS if key in cert]
    if cert.get("reason"):
        rows.append(("Why no guarantee", str(cert["reason"])))
    return rows


def _fact(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _slices_facts(s: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A fine-tune's retrain (the ``slices`` block of its exact_retrain certificate)."""
    exact = (s.get("exactness") or {}).get("status")
    return [
        (
            "Fine-tune",
            f"retrained from slice {s.get('first_affected_slice')} of {s.get('slices_total')} "
            f"({s.get('slices_retrained')} slice(s)); check: {exact}",
        ),
        ("  checkpoint before", str(s.get("checkpoint_before"))),
        ("  checkpoint after", str(s.get("checkpoint_after"))),
        ("  lineage hash", str(s.get("lineage_hash"))),
        (
            "  checkpoints destroyed",
            ", ".join(short_hash(c, 16) for c in s.get("superseded_checkpoints") or []) or "none",
        ),
    ]


def certificate_words(cert: Mapping[str, Any]) -> str:
    if cert.get("plain_words"):
        return str(cert["plain_words"])
    from service.erasure.certificates import plain_words

    return plain_words(dict(cert))
