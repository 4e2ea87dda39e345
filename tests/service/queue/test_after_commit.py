"""Tasks are sent only after the transaction that created their work commits; a failed one sends
nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.queue.names import TASK_PROCESS_REQUEST
from tests.support.api import SentTasks, auth
from tests.support.sample_data import CANARY_SUBJECT

BODY = {"subject_id": CANARY_SUBJECT, "reason": "Art. 17 request"}


def test_approve_sends_the_task_after_commit(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    rid = app_client.post("/v1/requests", json=BODY, headers=auth(tokens["dpo"])).json()["id"]
    assert sent_tasks.sent == []
    r = app_client.post(
        f"/v1/requests/{rid}/approve", json={"reason": "verified"}, headers=auth(tokens["dpo"])
    )
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert sent_tasks.pop(TASK_PROCESS_REQUEST) == [[rid]]


def test_failed_transaction_sends_nothing(
    app_client: TestClient, tokens: dict[str, str], sent_tasks: SentTasks
) -> None:
    rid = app_client.post("/v1/requests", json=BODY, headers=auth(tokens["dpo"])).json()["id"]
    app_client.post(
        f"/v1/requests/{rid}/reject", json={"reason": "no id"}, headers=auth(tokens["dpo"])
    )
    r = app_client.post(
        f"/v1/requests/{rid}/approve", json={"reason": "x"}, headers=auth(tokens["dpo"])
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    assert sent_tasks.sent == []
