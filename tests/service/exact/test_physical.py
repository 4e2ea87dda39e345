"""Physical deletion: after an erasure the erased row's content is gone from the table's heap
pages, not only from what queries return.

These tests commit (VACUUM cannot see the work of an open transaction), so they run on a
database of their own, with the real task functions and an autocommit VACUUM. The probe reads
every heap tuple of training_records with pageinspect (superuser; both the embedded server and
CI's have it): without the VACUUM the erased row's old versions are still there (the control).
The VACUUM tests store records in clear (``encrypt_records`` off) to show what VACUUM removes;
with records sealed under the subject's key (the default) no page ever holds the value, and
the erasure destroys the key.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings, get_settings
from tests.support.api import SentTasks, auth
from tests.support.db import fresh_database
from tests.support.sample_data import CANARY_SUBJECT, MODEL_BODY, synthetic_csv
from tests.support.tasks import drain

# Stored only in the canary subject's rows (the region column of its payload).
DISTINCT = "zq-erased-7731"


def _csv() -> bytes:
    rows = list(csv.reader(io.StringIO(synthetic_csv().decode())))
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([*row[:3], DISTINCT, row[4]] if row[0] == CANARY_SUBJECT else row)
    return out.getvalue().encode()


@pytest.fixture(params=[False])
def committed(
    request: pytest.FixtureRequest,
    pg_server: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    sent_tasks: SentTasks,
) -> Iterator[dict[str, Any]]:
    """A fresh database whose transactions really commit, the API and the tasks both on it.
    ``request.param``: records sealed under their subject's key."""
    from service.api.tokens import create_token
    from service.app.factory import create_app
    from workers.base import DbTask

    with fresh_database(pg_server, prefix="lethe_vac") as url:
        monkeypatch.setenv("LETHE_DATABASE_URL", url)
        monkeypatch.setenv("LETHE_ENCRYPT_RECORDS", "true" if request.param else "false")
        get_settings.cache_clear()
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pageinspect")
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        DbTask.factory_override = factory
        app = create_app(get_settings())
        app.state.session_factory = factory
        with factory() as s, s.begin():
            tokens = {
                r: create_token(s, f"vac-{r}", r, actor="test")
                for r in ("dpo", "ml_engineer", "auditor")
            }
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                yield {"client": client, "tokens": tokens, "engine": engine, "sent": sent_tasks}
        finally:
            DbTask.factory_override = None
            engine.dispose()
            get_settings.cache_clear()


def _erase_canary(env: dict[str, Any], sealed: bool = False) -> dict[str, Any]:
    client, tokens, sent = env["client"], env["tokens"], env["sent"]
    ml, dpo = auth(tokens["ml_engineer"]), auth(tokens["dpo"])
    assert client.post("/v1/models", json=MODEL_BODY, headers=ml).status_code == 201
    r = client.post(
        f"/v1/models/{MODEL_BODY['name']}/records",
        files={"file": ("d.csv", _csv(), "text/csv")},
        headers=ml,
    )
    assert r.status_code == 201, r.text
    client.post(f"/v1/models/{MODEL_BODY['name']}/train", headers=ml)
    drain(sent)
    # The probe sees the live rows (clear), or nothing at all (sealed).
    assert (_tuples_holding(env["engine"]) == 0) is sealed
    rid = client.post(
        "/v1/requests", json={"subject_id": CANARY_SUBJECT, "reason": "art 17"}, headers=dpo
    ).json()["id"]
    assert client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo).is_success
    drain(sent)
    request = client.get(f"/v1/requests/{rid}", headers=dpo).json()
    assert request["status"] == "completed", request
    return dict(request)


def _tuples_holding(engine: Any, value: str = DISTINCT) -> int:
    """Heap tuples (live or dead) of training_records whose bytes hold ``value``."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM generate_series(0, "
                    "pg_relation_size('training_records') / current_setting('block_size')::int "
                    "- 1) AS p, heap_page_items(get_raw_page('training_records', p::int)) AS h "
                    "WHERE position(convert_to(:v, 'UTF8') IN h.t_data) > 0"
                ),
                {"v": value},
            ).scalar_one()
        )


def _pages_holding(engine: Any, value: str = DISTINCT) -> int:
    """Raw 8 kB pages of training_records holding ``value`` anywhere, free space included."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM generate_series(0, "
                    "pg_relation_size('training_records') / current_setting('block_size')::int "
                    "- 1) AS p WHERE position(convert_to(:v, 'UTF8') IN "
                    "get_raw_page('training_records', p::int)) > 0"
                ),
                {"v": value},
            ).scalar_one()
        )


def test_erasure_vacuums_the_erased_rows_out_of_the_heap(committed: dict[str, Any]) -> None:
    request = _erase_canary(committed)
    assert _tuples_holding(committed["engine"]) == 0
    # The certificate states what was removed and what remains in WAL and backups.
    [cert] = request["certificates"]
    claim = cert["body"]["physical_deletion"]
    assert claim["method"] == "VACUUM" and claim["tables"] == ["training_records"]
    words = cert["body"]["plain_words"]
    assert "lethe ran VACUUM" in words and "backups" in words and "write-ahead log" in words
    # The audit log records the VACUUM for this request: tables, times, counts; no content.
    with Session(committed["engine"]) as s:
        from service.db.tables import AuditEvent

        [event] = s.query(AuditEvent).filter_by(action="storage.vacuumed").all()
    assert str(event.request_id) == request["id"]
    assert event.details["tables"] == ["training_records"]
    heap = [r for r in event.details["relations"] if r["relation"].endswith("training_records")]
    assert heap and heap[0]["removed"] >= 1 and heap[0]["dead_not_yet_removable"] == 0
    assert DISTINCT not in str(event.details) and CANARY_SUBJECT not in str(event.details)
    # The request's report (built from the audit log) and its PDF carry both.
    aud = auth(committed["tokens"]["auditor"])
    client = committed["client"]
    report = client.get(f"/v1/requests/{request['id']}/report", headers=aud).json()
    assert "storage.vacuumed" in [e["action"] for e in report["events"]]
    assert "write-ahead log" in str(report["summary"]["current_certificates"])
    pdf = client.get(f"/v1/requests/{request['id']}/report", params={"format": "pdf"}, headers=aud)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_without_the_vacuum_the_row_stays_and_full_drops_its_bytes(
    committed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.exact.physical import vacuum

    # The control: the same erasure without the VACUUM leaves the old row versions readable.
    for module in ("workers.slice_retrain", "workers.tasks.requests"):
        monkeypatch.setattr(f"{module}.reclaim_space", lambda *_: None)
    _erase_canary(committed)
    engine = committed["engine"]
    before = _tuples_holding(engine), _pages_holding(engine)
    assert before[0] > 0
    plain = vacuum(get_settings(), ["training_records"])
    after_plain = _tuples_holding(engine), _pages_holding(engine)
    assert after_plain[0] == 0
    # VACUUM FULL rewrites the table: not even the free space of a page keeps the bytes.
    monkeypatch.setenv("LETHE_PHYSICAL_DELETION", "vacuum_full")
    get_settings.cache_clear()
    full = vacuum(get_settings(), ["training_records"])
    assert full["method"] == "VACUUM FULL"
    assert [r for r in full["relations"] if r["relation"].endswith("training_records")]
    assert _pages_holding(engine) == 0
    print(
        {
            "tuples_and_pages_holding_value": {
                "after_purge": before,
                "after_vacuum": after_plain,
                "after_vacuum_full": (_tuples_holding(engine), _pages_holding(engine)),
            },
            "vacuum_relations": plain["relations"],
        }
    )


@pytest.mark.parametrize("committed", [True], indirect=True)
def test_sealed_records_leave_no_readable_copy(committed: dict[str, Any]) -> None:
    request = _erase_canary(committed, sealed=True)
    engine = committed["engine"]
    assert _tuples_holding(engine) == 0 and _pages_holding(engine) == 0
    [cert] = request["certificates"]
    claim = cert["body"]["physical_deletion"]
    assert len(claim["keys_destroyed"]) == 1 and not claim["remains_readable"]
    assert "key was destroyed" in claim["statement"]
    from service.reports.plain import certificate_words

    # The DPO's words say it too, and no longer that backups keep readable copies.
    words = certificate_words(cert["body"])
    assert "that key was destroyed" in words and "until they expire" not in words
