"""The console's Servers section: each registered server, whether it is still heard from, and
the deletions of erased weights it confirmed or owes, in plain words."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from service.db.base import utcnow
from service.db.enums import HostPurgeStatus, ModelKind
from service.db.tables import Host, HostPurge, MlModel
from service.web.servers import server_rows
from tests.support.console import sign_in
from tests.support.db import bare_generative_model


def _hosts(session: Session) -> tuple[str, str]:
    """A live API server with one deletion confirmed and one waiting, and a worker silent for
    two hours with one deletion it never confirmed."""
    live, silent = f"live{uuid.uuid4().hex[:12]}", f"mute{uuid.uuid4().hex[:12]}"
    now = utcnow()
    session.add(Host(id=live, role="api", registered_at=now, last_seen_at=now))
    ago = now - timedelta(hours=2)
    session.add(Host(id=silent, role="worker", registered_at=ago, last_seen_at=ago))
    model = bare_generative_model(session, "ft")
    for host, status in (
        (live, HostPurgeStatus.confirmed),
        (live, HostPurgeStatus.pending),
        (silent, HostPurgeStatus.absent),
    ):
        session.add(
            HostPurge(host_id=host, model_id=model.id, checkpoints=["c" * 64], status=status)
        )
    session.flush()
    return live, silent


def test_servers_in_plain_words(session: Session, settings: Settings) -> None:
    live, silent = _hosts(session)
    rows = {r.host_id: r for r in server_rows(session, settings)}
    assert rows[live].name == f"API server {live[:8]}" and not rows[live].gone
    assert rows[live].heard.startswith("Last heard from ") and "gone" not in rows[live].heard
    assert rows[live].deletions == (
        "Confirmed 1 deletion of erased weights; 1 deletion not confirmed yet."
    )
    assert rows[silent].name == f"Worker {silent[:8]}" and rows[silent].gone
    assert rows[silent].heard == (
        "Last heard from 2 hours ago: silent too long, so it is treated as gone and its "
        "deletions as not confirmed."
    )
    assert rows[silent].deletions.startswith("1 deletion it never confirmed before it fell silent")


def test_the_models_page_lists_the_servers(
    web: TestClient, accounts: dict[str, str], factory: sessionmaker[Session]
) -> None:
    with factory() as s, s.begin():
        live, silent = _hosts(s)
    sign_in(web, accounts["dpo"])
    page = web.get("/console/models")
    assert page.status_code == 200
    assert f"API server {live[:8]}" in page.text and f"Worker {silent[:8]}" in page.text
    assert "silent too long, so it is treated as gone" in page.text
    assert f"host {live} (api)" in page.text  # the engineers' detail names the full id


def test_a_fine_tuned_model_is_described_as_one_lethe_can_retrain() -> None:
    from service.web.render import ENV

    model = MlModel(name="support-bot", kind=ModelKind.generative, config={"finetune": {}})
    x = {"m": model, "versions": [], "active": None, "words": None, "finetuned": True}
    page = ENV.get_template("models.html").render(user=None, models=[x], servers=[])
    assert "lethe fine-tuned this language model itself" in page
    assert "cannot retrain" not in page
    assert "Servers" in page  # a fine-tuned model can be copied to servers: the section shows


def test_no_servers_section_without_servers_or_fine_tuned_models() -> None:
    from service.web.render import ENV

    page = ENV.get_template("models.html").render(user=None, models=[], servers=[])
    assert "Servers" not in page
