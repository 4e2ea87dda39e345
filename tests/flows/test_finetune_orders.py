"""A layered fine-tune kept in two slice orders (S3T): an erasure of a subject trained first in
order 0 switches to order 1, where it came last, so one adapter stays on; the switched-off
weights are those of order 1's first slice fine-tuned from scratch on the retained records, and
after the background restore both orders equal fine-tuning from scratch without the subject.
Tasks run directly (real PostgreSQL, real training of the tiny model)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.artifacts import open_store
from models.finetune import (
    assign_slice,
    checkpoint_ids,
    compare_with_stored,
    keys_by_slice,
    merged_dir,
    train_sliced_in_memory,
)
from models.finetune.checkpoints import checkpoint_key
from service.core.config import Settings
from service.core.security import subject_ref
from service.core.storage import merged_root
from service.db.enums import JobKind
from service.db.tables import Job, MlModel, ModelVersion
from service.finetune.records import finetune_config, load_records
from service.queue.names import TASK_FINETUNE_MODEL, TASK_FINETUNE_RETRAIN, TASK_FINETUNE_VERIFY
from service.registry.config import FinetuneSettings
from service.rules.finetuned_serving import manifest_orders
from tests.support.api import SentTasks, auth
from tests.support.generative_data import (
    FORGOTTEN,
    PEOPLE,
    TINY_FINETUNE,
    facts_of,
    forget_body,
    generative_model_body,
)
from tests.support.tasks import drain

# The tiny model has two layers: two slices, one adapted layer each, in two orders.
ORDERED = {**TINY_FINETUNE, "slices": 2, "adapter_layers": 2, "layered": True, "orders": 2}


def _jsonl() -> bytes:
    lines = [
        json.dumps({"subject": name, "question": q, "answer": a})
        for name in PEOPLE
        for q, a in facts_of(name)
    ]
    return ("\n".join(lines) + "\n").encode()


def _name_placing_forgotten_first(settings: Settings) -> str:
    """A model name whose partition salt puts the forgotten subject in bucket 0: trained first
    in order 0 (every adapter would go) and last in order 1."""
    ref = subject_ref(settings, FORGOTTEN)
    for _ in range(100):
        name = f"ft-ord-{uuid.uuid4().hex[:6]}"
        if assign_slice(ref, finetune_config(name, FinetuneSettings(**ORDERED))) == 0:
            return name
    raise AssertionError("no name put the subject in bucket 0")


def _train(client: TestClient, ml: str, sent: SentTasks, body: dict[str, Any]) -> str:
    name = str(body["name"])
    r = client.post("/v1/models", json=body, headers=auth(ml))
    assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/models/{name}/records",
        files={"file": ("r.jsonl", _jsonl(), "application/jsonl")},
        headers=auth(ml),
    )
    assert r.status_code == 201, r.text
    assert client.post(f"/v1/models/{name}/train", headers=auth(ml)).status_code == 202
    assert drain(sent) == [(TASK_FINETUNE_MODEL, "done")]
    return name


def _versions(session: Session, name: str) -> list[ModelVersion]:
    model_id = session.scalars(select(MlModel.id).where(MlModel.name == name)).one()
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.model_id == model_id)
            .order_by(ModelVersion.number)
        )
    )


def _erase(client: TestClient, dpo: str, model: str) -> str:
    body = {"subject_id": FORGOTTEN, "reason": "art 17", "scope": [model], "forget": forget_body()}
    rid = str(client.post("/v1/requests", headers=auth(dpo), json=body).json()["id"])
    r = client.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=auth(dpo))
    assert r.status_code == 200
    return rid


def _assert_switched_weights_are_the_prefix_from_scratch(
    settings: Settings, tiny_lm: Path, switched: ModelVersion, retained: list[Any]
) -> None:
    """The merged weights served at switch-off, tensor for tensor, against order 1's first
    slice fine-tuned from scratch on the retained records and merged the same way."""
    order = manifest_orders(switched.manifest)[1]
    base = switched.manifest["base_id"]
    scratch = train_sliced_in_memory(tiny_lm, order.config, retained, base_id=base, upto=1)
    assert scratch.result.final_checkpoint == switched.manifest["final"] == order.final
    with torch.no_grad():
        merged = scratch.model.peft.merge_and_unload().state_dict()
    folder = merged_dir(merged_root(settings), order.final)
    served = {k: v for path in folder.glob("*.safetensors") for k, v in load_file(path).items()}
    assert served
    for name, tensor in served.items():
        assert torch.equal(tensor, merged[name]), name


def test_two_orders_switch_to_the_deeper_one_and_restore_both_exactly(
    app_client: TestClient,
    tokens: dict[str, str],
    sent_tasks: SentTasks,
    session: Session,
    settings: Settings,
    tiny_lm: Path,
    retain_file: Path,
) -> None:
    ml, dpo = tokens["ml_engineer"], tokens["dpo"]
    body = generative_model_body(_name_placing_forgotten_first(settings), tiny_lm, retain_file)
    body["policy"]["strategy"] = "both"
    body["config"]["finetune"] = {**ORDERED, "orders": 3}
    r = app_client.post("/v1/models", json=body, headers=auth(ml))
    assert r.status_code == 422  # at most one order per slice
    body["config"]["finetune"] = ORDERED
    name = _train(app_client, ml, sent_tasks, body)
    [first] = _versions(session, name)
    orders = manifest_orders(first.manifest)
    assert [o.config.slice_order for o in orders] == [(), (1, 0)]
    assert first.manifest["served_order"] == 0 and first.metrics["orders"] == 2
    store = open_store(settings.artifact_location)
    trained = {c for o in orders for c in o.checkpoints}
    assert len(trained) == 4 and all(store.exists(checkpoint_key(c)) for c in trained)

    rid = _erase(app_client, dpo, name)
    ran = drain(sent_tasks)
    assert (TASK_FINETUNE_RETRAIN, "done") in ran and (TASK_FINETUNE_VERIFY, "bit_exact") in ran

    request = app_client.get(f"/v1/requests/{rid}", headers=auth(dpo)).json()
    assert request["status"] == "completed"
    switch_cert = next(
        c["body"]
        for c in request["certificate_history"]
        if c["body"].get("slices", {}).get("stage") == "switched_off"
    )
    slices = switch_cert["slices"]
    assert (slices["served_order"], slices["slices_kept"], slices["first_affected_slice"]) == (
        1,
        1,
        1,
    )
    assert [(o["first_affected_slice"], o["slices_kept"]) for o in slices["orders"]] == [
        (0, 0),
        (1, 1),
    ]
    assert "serves order 2" in switch_cert["plain_words"]
    # Every order's checkpoints that saw the subject are destroyed, with their hashes.
    seen = set(orders[0].checkpoints) | set(orders[1].checkpoints[1:])
    destroyed = {
        d["checkpoint"]: d for d in switch_cert["destroyed_artifacts"] if d["type"] == "checkpoint"
    }
    assert set(destroyed) == seen == set(slices["superseded_checkpoints"])
    assert all(d["sha256"] and not store.exists(checkpoint_key(c)) for c, d in destroyed.items())

    _, switched, restored = _versions(session, name)
    model_id = switched.model_id
    retained = load_records(session, settings, model_id, include_claimed=False)
    assert retained and subject_ref(settings, FORGOTTEN) not in {r.subject for r in retained}
    assert switched.manifest["served_order"] == 1
    _assert_switched_weights_are_the_prefix_from_scratch(settings, tiny_lm, switched, retained)

    # The restore: both orders equal fine-tuning from scratch on the retained records.
    assert restored.manifest["served_order"] == 0
    [final] = request["certificates"]
    assert final["body"]["slices"]["exactness"]["orders_checked"] == 2
    assert [o["slices_retrained"] for o in final["body"]["slices"]["orders"]] == [2, 1]
    for order in manifest_orders(restored.manifest):
        ids = checkpoint_ids(
            restored.manifest["base_id"], order.config, keys_by_slice(order.config, retained)
        )
        assert list(order.checkpoints) == ids and order.final == ids[-1]
        fresh = train_sliced_in_memory(
            tiny_lm, order.config, retained, base_id=restored.manifest["base_id"]
        )
        check = compare_with_stored(fresh, order.final, store, time.perf_counter())
        assert check.bit_exact and check.tensors_compared > 0, check.mismatched
    check_job = session.scalars(
        select(Job).where(Job.model_id == model_id, Job.kind == JobKind.finetune_verify)
    ).one()
    assert check_job.result["order_checkpoints"] == [
        o.final for o in manifest_orders(restored.manifest)
    ]
