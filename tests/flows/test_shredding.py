"""A canary person through the request paths (an exact retrain, a rejection after an identity
check, a cancellation), then the periodic job destroys the requests' keys. Afterwards the
canary's identifier, name, fact and the DPO's texts are searched in plain text everywhere
lethe keeps bytes: a ``pg_dump``, the raw PostgreSQL data files and WAL segments, the artifact
store (the key store included), the data folder, the logs, the tasks sent and the reports.
Nothing is found, and every sealed copy taken before the shredding fails to open.

The control runs the same search with shredding switched off: the sealed copies still open to
the canary, and the raw scan finds a canary written in plain text (it does read the pages and
the WAL). The guard path keeps the canary only sealed, and its key while its rules are served.
On a versioned bucket (moto's server) no version or delete marker of a destroyed key remains.
Everything commits for real, on a database of this module's own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings, get_settings
from service.core.keys import KeyDestroyed, keys_for
from service.core.security import open_sealed
from service.db.tables import ErasureRequest, RequestNote
from tests.support.api import SentTasks, auth
from tests.support.canary import Canary, files_under, pg_dump, raw_hits
from tests.support.db import fresh_database
from tests.support.moto_s3 import versioned_bucket
from tests.support.pdf_tools import pdf_text
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv
from tests.support.settings import set_everywhere
from tests.support.tasks import drain


@pytest.fixture(scope="module")
def own_database(pg_server: str) -> Iterator[str]:
    with fresh_database(pg_server, prefix="lethe_shred") as url:
        yield url


@pytest.fixture(autouse=True)
def _own_url(settings: Settings, own_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # What opens its own connection (VACUUM after a purge) goes to this database too.
    monkeypatch.setattr(get_settings(), "database_url", own_database)


@pytest.fixture
def factory(own_database: str) -> Iterator[sessionmaker[Session]]:
    """Real commits (the search must see what a backup would), on this module's database."""
    engine = create_engine(own_database)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


def _trained(client: TestClient, tokens: dict[str, str], sent: SentTasks, canary: Canary) -> None:
    h = auth(tokens["ml_engineer"])
    body = {**MODEL_BODY, "name": canary.model}
    assert client.post("/v1/models", json=body, headers=h).status_code == 201
    csv = synthetic_csv().replace(CANARY_SUBJECT.encode(), canary.identifier.encode())
    r = client.post(
        f"/v1/models/{canary.model}/records", files={"file": ("d.csv", csv, "text/csv")}, headers=h
    )
    assert r.status_code == 201, r.text
    assert client.post(f"/v1/models/{canary.model}/train", headers=h).status_code in (200, 201, 202)
    drain(sent)


def _file(client: TestClient, dpo: str, canary: Canary, what: str) -> str:
    body = {
        "subject_id": canary.identifier,
        "reason": f"{what}: letter from {canary.name}",
        "scope": [canary.model],
        "forget": {"names": [canary.name], "facts": [{"answer": canary.fact}]},
    }
    r = client.post("/v1/requests", json=body, headers=auth(dpo))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _through_every_path(
    client: TestClient, tokens: dict[str, str], sent: SentTasks, canary: Canary
) -> list[str]:
    """An exact retrain, a rejection after an identity check, a cancellation."""
    dpo = auth(tokens["dpo"])
    _trained(client, tokens, sent, canary)
    erased = _file(client, tokens["dpo"], canary, "erase")
    r = client.post(f"/v1/requests/{erased}/approve", json={"reason": f"ok {canary.token}"},
                    headers=dpo)  # fmt: skip
    assert r.status_code == 200, r.text
    drain(sent)
    rejected = _file(client, tokens["dpo"], canary, "reject")
    check = {"method": "id_document", "reference": f"passport {canary.token}"}
    assert client.post(f"/v1/requests/{rejected}/verify-identity", json=check,
                       headers=dpo).status_code == 200  # fmt: skip
    refusal = {"reason": f"{canary.name} has no claim", "code": "other"}
    assert client.post(f"/v1/requests/{rejected}/reject", json=refusal,
                       headers=dpo).status_code == 200  # fmt: skip
    cancelled = _file(client, tokens["dpo"], canary, "cancel")
    assert client.post(f"/v1/requests/{cancelled}/cancel", json={"reason": canary.fact},
                       headers=dpo).status_code == 200  # fmt: skip
    ids = [erased, rejected, cancelled]
    statuses = [client.get(f"/v1/requests/{i}", headers=dpo).json()["status"] for i in ids]
    assert statuses == ["completed", "rejected", "cancelled"]
    return ids


def _sealed_copies(factory: sessionmaker[Session], ids: list[str]) -> list[bytes]:
    """What a backup taken now would hold: every sealed column of the requests."""
    uids = [uuid.UUID(i) for i in ids]
    with factory() as s:
        requests = list(s.scalars(select(ErasureRequest).where(ErasureRequest.id.in_(uids))))
        notes = list(s.scalars(select(RequestNote).where(RequestNote.request_id.in_(uids))))
    blobs = [b for r in requests for b in (r.forget_content, r.reason_encrypted) if b]
    return blobs + [n.text_encrypted for n in notes]


def _shred(settings: Settings, monkeypatch: pytest.MonkeyPatch, on: bool) -> dict[str, int]:
    from workers.tasks.reaper import shred_keys

    settings = get_settings()  # the object the task reads (a test may have rebuilt it)
    monkeypatch.setattr(settings, "crypto_shredding", on)
    for kind in ("completed", "rejected", "cancelled"):
        monkeypatch.setattr(settings, f"retention_{kind}_days", 0.0)
    return dict(shred_keys())


def _report_bytes(client: TestClient, token: str, ids: list[str]) -> bytes:
    out = b""
    for rid in ids:
        for fmt in ("json", "csv", "pdf"):
            r = client.get(f"/v1/requests/{rid}/report", params={"format": fmt},
                           headers=auth(token))  # fmt: skip
            assert r.status_code == 200, r.text
            out += pdf_text(r.content)[0].encode() if fmt == "pdf" else r.content
    return out


def test_nothing_of_the_canary_is_left_after_shredding(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    settings: Settings,
    own_database: str,
    factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = Canary()
    caplog.set_level("DEBUG")
    ids = _through_every_path(app_client, tokens, sent_tasks, canary)
    copies = _sealed_copies(factory, ids)
    assert len(copies) >= 8 and not any(canary.found_in(b) for b in copies)
    assert _shred(settings, monkeypatch, on=True)["shredded"] == 3

    for blob in copies:  # the copies in backups, replicas and WAL: unreadable for good
        with pytest.raises(KeyDestroyed):
            open_sealed(settings, blob)
    assert not any(keys_for(settings).exists(f"req-{i}") for i in ids)
    places = {
        "pg_dump": pg_dump(own_database),
        "reports": _report_bytes(app_client, tokens["auditor"], ids),
        "logs": caplog.text.encode(),
        "tasks sent": repr(sent_tasks.sent).encode(),
    }
    assert [where for where, data in places.items() if canary.found_in(data)] == []
    assert raw_hits(own_database, canary) == []
    folders = [Path(settings.artifact_location), Path(settings.data_dir)]
    held = [str(p) for root in folders for p in files_under(root) if canary.found_in(
        p.read_bytes())]  # fmt: skip
    assert held == []
    words = app_client.get(f"/v1/requests/{ids[1]}/report", headers=auth(tokens["auditor"]))
    destroyed = [e for e in words.json()["events"] if e["action"] == "request.keys_destroyed"]
    assert destroyed and destroyed[0]["details"]["key_ids"] == [f"req-{ids[1]}"]


def test_control_without_shredding_the_search_finds_the_canary(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    settings: Settings,
    own_database: str,
    factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = Canary()
    ids = _through_every_path(app_client, tokens, sent_tasks, canary)
    copies = _sealed_copies(factory, ids)
    assert _shred(settings, monkeypatch, on=False)["shredded"] == 0
    opened = b"".join(open_sealed(settings, blob) for blob in copies)
    assert canary.found_in(opened) and canary.name.encode() in opened
    # The raw scan does read the pages and the WAL: a plain copy of the canary is found.
    with factory() as s, s.begin():
        s.execute(text("CREATE TABLE IF NOT EXISTS plain_control (t text)"))
        s.execute(text("INSERT INTO plain_control VALUES (:t)"), {"t": canary.fact})
    hits = raw_hits(own_database, canary)
    assert any("/pg_wal/" in h for h in hits) and any("/base/" in h for h in hits), hits
    assert canary.found_in(pg_dump(own_database))


def test_guard_rules_hold_the_canary_only_sealed_and_keep_their_key_while_served(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    own_database: str,
    factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    from service.db.tables import RuleSetVersion
    from service.rules.rulesets import per_request_rule_sets
    from tests.support.generative_data import generative_model_body

    canary = Canary()
    body = generative_model_body(canary.model, tiny_lm, retain_file)
    h = auth(tokens["ml_engineer"])
    assert app_client.post("/v1/models", json=body, headers=h).status_code == 201
    rid = _file(app_client, tokens["dpo"], canary, "guard")
    ok = app_client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"},
                         headers=auth(tokens["dpo"]))  # fmt: skip
    assert ok.status_code == 200
    drain(sent_tasks)
    with factory() as s:
        (row,) = s.scalars(select(RuleSetVersion).where(RuleSetVersion.request_ids.contains([rid])))
        opened = per_request_rule_sets(get_settings(), row)[rid]
    assert canary.name in opened.to_json()  # the rules hold the name: sealed, not in clear
    assert not canary.found_in(bytes(row.rules_encrypted))
    assert raw_hits(own_database, canary) == [] and not canary.found_in(pg_dump(own_database))
    # Served rules keep their request's key, whatever the retention says.
    _shred(get_settings(), monkeypatch, on=True)
    assert keys_for(get_settings()).exists(f"req-{rid}")


@pytest.fixture
def versioned_store(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[Any]:
    """The artifact store (and with it the key store) on a versioned bucket of moto's
    server, for the app's and the workers' settings."""
    with versioned_bucket() as bucket:
        set_everywhere(monkeypatch, settings, artifact_url=f"s3://{bucket.name}/artifacts")
        yield bucket.client, bucket.name


def test_on_a_versioned_bucket_no_version_of_a_destroyed_key_remains(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    versioned_store: Any,
) -> None:
    client, bucket = versioned_store
    canary = Canary()
    ids = _through_every_path(app_client, tokens, sent_tasks, canary)
    keys = [f"artifacts/keys/req-{i}" for i in ids]
    listed = client.list_object_versions(Bucket=bucket, Prefix="artifacts/keys/")
    held = {v["Key"] for v in listed.get("Versions", [])}
    assert set(keys) <= held  # the keys are in the bucket before
    assert _shred(settings, monkeypatch, on=True)["shredded"] == 3
    listed = client.list_object_versions(Bucket=bucket, Prefix="artifacts/")
    every = listed.get("Versions", []) + listed.get("DeleteMarkers", [])
    assert not [v for v in every if v["Key"] in keys]  # no old version, no delete marker
    for version in listed.get("Versions", []):  # and no stored byte holds the canary
        body = client.get_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        assert not canary.found_in(body["Body"].read()), version["Key"]
