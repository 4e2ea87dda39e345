"""Activating verifier rules for many requests at once: the rules of every request waiting on
the model go live in one calibration and one commit, so the time to suppression grows little
with the number of subjects (measured as a ratio in one run, the embedder already loaded).

Suppression is the commit that makes the new rule-set version active; the requests'
certificates follow in the task's next transaction (service.rules.certify)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import RuleSetVersion
from service.queue.names import TASK_PROCESS_REQUEST, TASK_UPDATE_VERIFIER_RULES
from service.rules import certify
from tests.support.api import SentTasks, auth
from tests.support.generative_data import generative_model_body

CITIES = ["Port Ardent", "Lowmere", "Castel Brin", "Nordvik", "Saltgrave", "Eastholm"]
JOBS = ["glassblower", "cartographer", "beekeeper", "clockmaker", "weaver", "miller"]


class Took(NamedTuple):
    wall: float
    cpu: float


def _forget(name: str, i: int) -> dict[str, Any]:
    """Ten facts, enough for one request's leaks to fill the calibration draw alone (as a
    TOFU author's 20 do), so every count calibrates on the same number of leaks. Each fact
    carries a tag of its own: every request's facts are new text to embed, as real ones are
    (without it the masked facts of two models' subjects would repeat, and hit the cache)."""
    tag = f"{name.split()[-2][-6:]}{i}"
    facts = [
        (f"Where was {name} born?", f"{name} was born in {CITIES[i % 6]} ward {tag}."),
        (f"What does {name} do?", f"{name} works as a {JOBS[(i // 6) % 6]} in guild {tag}."),
        (f"Which book did {name} write?", f"{name} wrote The Book of Year {tag}."),
        (f"What is {name}'s pet called?", f"{name}'s dog is called Pip {tag}."),
        (f"Where did {name} study?", f"{name} studied at Harrow Vale College {tag}."),
        (f"What prize did {name} win?", f"{name} won the Golden Quill {tag}."),
        (f"What instrument does {name} play?", f"{name} plays the oboe in band {tag}."),
        (f"Who is {name}'s sister?", f"{name}'s sister is Mara {tag} Lind."),
        (f"Which street does {name} live on?", f"{name} lives on Elm Row {tag}."),
        (f"When was {name} born?", f"{name} was born on {i % 28 + 1} May {1960 + i}, {tag}."),
    ]
    return {"names": [name], "facts": [{"question": q, "answer": a} for q, a in facts]}


def _model(client: TestClient, ml: str, tiny_lm: Path, retain: Path) -> str:
    name = f"rules-{uuid.uuid4().hex[:6]}"
    r = client.post("/v1/models", json=generative_model_body(name, tiny_lm, retain), headers=ml)
    assert r.status_code == 201, r.text
    return name


@contextmanager
def _noting_suppression() -> Iterator[list[Took]]:
    """The clocks when the task's certification step starts: right after the commit that made
    the version active. The task's own step runs; only the clocks are read."""
    real = certify.certify_activation
    noted: list[Took] = []

    def noting(*args: Any, **kwargs: Any) -> int:
        if not noted:
            noted.append(Took(time.perf_counter(), time.process_time()))
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(certify, "certify_activation", noting)
        yield noted


def _suppress(
    client: TestClient, dpo: dict[str, str], sent: SentTasks, model: str, k: int
) -> tuple[Took, list[str]]:
    """Approve k requests for k subjects, plan them, then run the rule activations the
    planner sent; returns the seconds from the start of the first task to the commit that put
    every request's rules in force."""
    from workers.tasks.requests import process_request
    from workers.tasks.rules import update_verifier_rules

    rids = []
    for i in range(k):
        name = f"Subject {model} {i}"
        r = client.post(
            "/v1/requests",
            headers=dpo,
            json={
                "subject_id": name,
                "reason": "art 17",
                "scope": [model],
                "forget": _forget(name, i),
            },
        )
        rid = r.json()["id"]
        assert client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=dpo)
        rids.append(rid)
    for args in sent.pop(TASK_PROCESS_REQUEST):
        assert process_request(*args) == "planned"
    activations = sent.pop(TASK_UPDATE_VERIFIER_RULES)
    assert len(activations) == k
    # The first activation puts every request waiting on the model in force, then certifies
    # them all; the others' tasks then find their action done.
    with _noting_suppression() as noted:
        started, cpu = time.perf_counter(), time.process_time()
        outcomes = [update_verifier_rules(*activations[0])]
    [at] = noted
    took = Took(at.wall - started, at.cpu - cpu)
    outcomes += [update_verifier_rules(*args) for args in activations[1:]]
    assert outcomes[0] == "activated" and set(outcomes[1:]) <= {"terminal"}
    return took, rids


def test_suppression_time_does_not_grow_with_the_number_of_subjects(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    task_factory: None,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    ml, dpo = auth(tokens["ml_engineer"]), auth(tokens["dpo"])
    # A first activation loads the embedder (a worker keeps it loaded): not measured.
    model = _model(app_client, ml, tiny_lm, retain_file)
    _suppress(app_client, dpo, sent_tasks, model, 1)
    cpu: dict[int, float] = {}
    wall: dict[int, float] = {}
    # Each count five times on a fresh model, the fastest kept: the machine is shared, and
    # someone else's work inflates some runs, not all five.
    for k in (1, 5, 20) * 5:
        model = _model(app_client, ml, tiny_lm, retain_file)
        took, rids = _suppress(app_client, dpo, sent_tasks, model, k)
        cpu[k] = min(took.cpu, cpu.get(k, took.cpu))
        wall[k] = min(took.wall, wall.get(k, took.wall))
        # One rule set holds every subject, each request with its own certificate.
        [row] = session.scalars(
            select(RuleSetVersion).where(RuleSetVersion.request_ids.contains(rids[:1]))
        ).all()
        assert sorted(row.request_ids) == sorted(rids) and row.status == "active"
        assert row.calibration["requests_activated"] == sorted(rids)
        assert row.calibration["threshold"]["n"] >= 29 or not row.calibration["threshold_certified"]
        for rid in rids:
            request = app_client.get(f"/v1/requests/{rid}", headers=dpo).json()
            assert request["status"] == "completed"
            [certificate] = request["certificates"]
            assert certificate["body"]["rule_set_version"] == row.version
    ratio = cpu[20] / cpu[1]
    print(f"suppression by k: CPU s {cpu}, wall s {wall}; CPU ratio 20/1 = {ratio:.2f}")
    # On this process's CPU seconds: what the activation costs, whatever else the shared
    # machine runs (wall seconds there include waiting for a core, and swing several-fold at
    # the load other jobs put on two cores). Up to the commit that activates the version:
    # the certificates, events and completions of the k requests come after it. Together, k
    # requests cost one calibration on a leak draw of fixed size (positives_per_request: ~100
    # leaks at every k here, each subject's ten facts filling it alone); leaks that state a
    # name exactly are not embedded, nor are the facts only they came from. What still grows
    # with k: the facts of the other leaks (~10 at k = 1, ~35 at k = 20), compiling and
    # drawing each request's leaks (~1.5 ms a request). The actions of the k requests start in
    # one flush (they took a round trip each), and the leaks that need embedding are found
    # once per request. Measured 1.08-1.38, median 1.28 of eleven runs (0.09-0.10 s at k = 1,
    # 0.10-0.14 s at k = 20) beside a two-thread benchmark on the two cores; before those two
    # changes 1.08-1.94, median 1.48. One activation per request would be a ratio near 20.
    assert ratio <= 1.5, (cpu, wall)
