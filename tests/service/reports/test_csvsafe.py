"""Spreadsheet-safe CSV: an exported cell that starts like a formula is quoted as text."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.support.api import SentTasks, auth


def test_csv_export_neutralises_formulas(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks, session: Session
) -> None:
    from service.audit import append_event

    append_event(
        session, actor="=cmd|'/c calc'!A1", action="test.event", target_type="t", target_id="+1"
    )
    session.commit()
    r = app_client.get(
        "/v1/audit/export", params={"format": "csv"}, headers=auth(tokens["auditor"])
    )
    assert r.status_code == 200
    assert "'=cmd" in r.text and "'+1" in r.text
    assert ",=cmd" not in r.text and ",+1," not in r.text


def test_csv_export_neutralises_formulas_in_every_cell(
    app_client: TestClient, tokens: dict[str, str], factory: sessionmaker[Session]
) -> None:
    # Token names are validated now, but an exported cell must be safe whatever the log holds
    # (older rows, future fields): write formula text into an event directly.
    from service.audit import append_event

    with factory() as session, session.begin():
        append_event(
            session,
            actor='=HYPERLINK("x")',
            action="test.formula",
            target_type="test",
            target_id="+1",
            details={"note": "@SUM(A1)"},
        )
    h = auth(tokens["admin"])
    csv_text = app_client.get("/v1/audit/export", params={"format": "csv"}, headers=h).text
    assert "=HYPERLINK" in csv_text
    for line in csv_text.splitlines()[1:]:
        for cell in line.split(","):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
