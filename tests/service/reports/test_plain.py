"""A fine-tune's certificate in the DPO's words: the servers its copies were deleted on, and
the day the person's record key was destroyed; the engineers' facts list each host."""

from __future__ import annotations

from typing import Any

from service.reports.plain import certificate_words, event_words
from service.reports.words import certificate_facts

HOSTS: dict[str, Any] = {
    "servers": [
        {"host": "host-a", "status": "confirmed", "settled_at": "2026-12-05T06:28:00+00:00"},
        {"host": "host-b", "status": "absent", "settled_at": "2026-12-05T06:45:00+00:00"},
    ],
    "total": 2,
    "confirmed": 1,
    "absent": 1,
    "pending": 0,
    "words": "The local copies of the model's old version were deleted on 1 of 2 servers "
    "that serve this model, each confirming it. 1 server(s) did not answer in time.",
}
CERT: dict[str, Any] = {
    "kind": "exact_retrain",
    "model": "ft",
    "records_erased": {"train": 4, "holdout": 0},
    "slices": {"stage": "restored"},
    "determinism_check": "bit_exact",
    "physical_deletion": {
        "method": "VACUUM",
        "backup_retention_days": None,
        "keys_destroyed": ["subjects/m/ab#sub_abcdef0123456789"],
        "keys_destroyed_at": "2026-12-05T06:27:31+00:00",
    },
    "hosts": HOSTS,
}


def test_the_words_name_the_servers_and_the_day_the_key_was_destroyed() -> None:
    words = certificate_words(CERT)
    assert "that key was destroyed on 5 December 2026" in words
    assert "deleted on 1 of 2 servers that serve this model" in words
    assert "did not answer in time" in words


def test_without_hosts_the_words_say_nothing_of_servers() -> None:
    words = certificate_words({k: v for k, v in CERT.items() if k != "hosts"})
    assert "server" not in words


def test_the_facts_list_each_host_and_the_key_time() -> None:
    facts = dict(certificate_facts(CERT))
    assert facts["Servers confirmed"] == "1 of 2"
    assert facts["  host-b"].startswith("absent")
    assert facts["Keys destroyed at"] == "2026-12-05T06:27:31+00:00"


def test_a_servers_confirmation_reads_in_plain_words() -> None:
    """The audit trail's steps for a server's deletion say "server", not the event's name."""
    for action in ("host.purge_confirmed", "host.purge_absent"):
        words = event_words({"action": action, "details": {"host": "host-1"}})
        assert "server" in words and "old model version" in words
        assert "purge" not in words.lower() and "host" not in words.lower()
