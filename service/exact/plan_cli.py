"""`lethe models plan NAME`: start a plan job and print the stored (S, R) frontier as a table.

It talks to the database directly (like `lethe token create`); the job itself runs on a worker.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.audit import lock_audit_chain
from service.core.config import Settings
from service.db.enums import JobStatus
from service.db.session import transaction
from service.db.tables import Job
from service.exact.planning import PlanOptions, request_plan
from service.registry.config import ModelConfig
from service.registry.service import get_model

ACTOR = "cli"


def start(
    factory: sessionmaker[Session], settings: Settings, name: str, options: PlanOptions
) -> uuid.UUID:
    with transaction(factory) as session:
        lock_audit_chain(session)
        model = get_model(session, name, lock=True)
        return request_plan(session, settings, model, options, ACTOR).id


def wait(factory: sessionmaker[Session], job_id: uuid.UUID, timeout_s: float) -> str:
    """The job's final status, or its current one when ``timeout_s`` runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        with factory() as session:
            job = session.get_one(Job, job_id)
            status = job.status
        if status in (JobStatus.done, JobStatus.failed) or time.monotonic() >= deadline:
            return status.value
        time.sleep(1.0)


def stored_plan(factory: sessionmaker[Session], name: str) -> dict[str, Any] | None:
    with factory() as session:
        return ModelConfig.model_validate(get_model(session, name).config).sisa_plan


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def format_plan(plan: dict[str, Any]) -> str:
    """The frontier as a table, then the proposal in words."""
    header = (
        f"{'S':>4} {'R':>4} {'accuracy':>9} {'gap (pts)':>10} {'± se':>6} {'speed-up':>9} "
        f"{'budget':>7}"
    )
    lines = [
        f"one model: accuracy {_number(plan['one_model_accuracy'], 4)} "
        f"({plan['training_records']} training / {plan['test_records']} test records, "
        f"budget {plan['budget_points']} points, {plan['requests_per_retrain']} request(s) "
        "per retrain)",
        header,
        "-" * len(header),
    ]
    chosen = plan["chosen"]
    for point in plan["frontier"]:
        mark = (
            " <"
            if (point["shards"], point["slices"])
            == (
                chosen["shards"],
                chosen["slices"],
            )
            else ""
        )
        lines.append(
            f"{point['shards']:>4} {point['slices']:>4} {_number(point['accuracy'], 4):>9} "
            f"{_number(point['accuracy_gap_points'], 2):>10} "
            f"{_number(point.get('accuracy_gap_se_points'), 2):>6} "
            f"{_number(point['per_request_speedup'], 1) + 'x':>9} "
            f"{'yes' if point['within_budget'] else 'no':>7}{mark}"
        )
    verdict = "within the budget" if plan["within_budget"] else "NOT within the budget"
    lines.append(
        f"proposal: S={chosen['shards']}, R={chosen['slices']} ({verdict}); "
        + ("applied" if plan["applied"] else f"not applied: {plan['not_applied_because']}")
    )
    return "\n".join(lines)
