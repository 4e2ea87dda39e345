"""What the console's pages read: paging and filters, overdue first, the model filter."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.db.tables import ErasureRequest
from service.erasure.filing import NewRequest, file_request
from service.web.views import PAGE_SIZE, Filters, list_requests


def _file(session: Session, n: int) -> list[ErasureRequest]:
    settings = get_settings()
    return [
        file_request(
            session,
            settings,
            NewRequest(f"views-{i}@example.org", "r", None, None, None, legal_ground="a"),
            "test",
        )[0]
        for i in range(n)
    ]


def test_paging_filters_and_overdue_first(session: Session) -> None:
    filed = _file(session, PAGE_SIZE + 3)
    late = filed[-1]
    session.execute(
        update(ErasureRequest)
        .where(ErasureRequest.id == late.id)
        .values(due_at=late.received_at - timedelta(days=1))
    )
    session.flush()
    session.expire_all()
    first = list_requests(session, Filters())
    assert first.total >= PAGE_SIZE + 3 and first.pages >= 2
    assert first.rows[0].id == late.id and first.rows[0].overdue
    assert first.rows[0].days_left < 0
    second = list_requests(session, Filters(page=2))
    assert second.page == 2 and not {r.id for r in second.rows} & {r.id for r in first.rows}
    only_late = list_requests(session, Filters(overdue="yes"))
    assert [r.id for r in only_late.rows] == [late.id]
    assert list_requests(session, Filters(status="completed")).total == 0
    assert list_requests(session, Filters(since="2999-01-01")).total == 0
    assert list_requests(session, Filters(model="no-such-model")).total >= PAGE_SIZE + 3


def test_model_filter_keeps_requests_for_every_model_and_that_model(session: Session) -> None:
    settings = get_settings()
    scoped = file_request(
        session, settings, NewRequest("scoped@example.org", "r", [], None, None), "test"
    )[0]
    scoped.scope = ["credit-x"]
    session.flush()
    names = {r.id for r in list_requests(session, Filters(model="credit-x")).rows}
    assert scoped.id in names
    assert scoped.id not in {r.id for r in list_requests(session, Filters(model="other")).rows}
