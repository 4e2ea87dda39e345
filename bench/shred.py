"""What crypto-shredding costs on the hot paths, and how soon an ended request's keys are gone.

Side by side, on a throw-away database (a local PostgreSQL, or ``--database-url``), in process
with the real service functions and task bodies:

* **ingestion** of training records (``exact.ingest.ingest_csv``, 100,000 by default): records
  sealed under a key per subject (the default) against stored in clear (``encrypt_records``
  off);
* **a SISA retrain** after an erasure (the ``retrain_shard`` task body: load, retrain, check,
  publish, purge), on a model ingested sealed against one ingested in clear;
* **a guarded generate**: the rules' read (``rules.rulesets.load_active``: per-request sealed
  rule sets, opened once per version and kept in memory) as a share of one generation of a tiny
  LM; the first read after an activation (opening every request's rules) is measured too;
* **request end → keys destroyed**: the shredding job's own time for due requests (the job
  runs every ``shred_interval_seconds``; the worst case adds that interval).

Targets (issue 28): ingestion and retrain ≤ 10 % slower, generate ≤ 2 %, keys destroyed ≤ 1 s
after the request ends. Prints JSON; ``--out`` writes it too.

    python -m bench.shred [--records 100000] [--retrain-records 20000] [--rounds N]
        [--parts generate,ingestion,retrain,keys_destroyed] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._stack import LOCAL_SERVER, throwaway_database  # noqa: E402

MODEL_CONFIG: dict[str, Any] = {
    "subject_column": "customer_id",
    "label_column": "label",
    "holdout_fraction": 0.1,
    "sisa": {
        "shards": 5,
        "slices": 4,
        "epochs": 2,
        "hidden": [32],
        "learning_rate": 0.05,
        "batch_size": 64,
        "seed": 0,
    },
}


def records_csv(n: int, per_subject: int = 2, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["customer_id", "age", "income", "region", "label"])
    for i in range(n):
        age = int(rng.integers(18, 80))
        income = float(np.round(rng.lognormal(8, 0.6), 2))
        region = ("north", "south", "east", "west")[int(rng.integers(0, 4))]
        score = 0.04 * (age - 45) + 0.8 * (np.log(income) - 8) + (0.5 if region == "north" else 0)
        label = "good" if score + rng.normal(0, 0.3) > 0 else "bad"
        writer.writerow([f"C-{i // per_subject:07d}", age, income, region, label])
    return out.getvalue().encode()


class Stack:
    """The app and the task bodies on one database; sent tasks run in process."""

    def __init__(self, database_url: str, data_dir: Path) -> None:
        os.environ.update(
            LETHE_ENVIRONMENT="development",
            LETHE_DATABASE_URL=database_url,
            LETHE_DATA_DIR=str(data_dir),
            LETHE_ARTIFACT_URL=str(data_dir / "artifacts"),
            LETHE_BROKER_URL="memory://",
            LETHE_LOG_LEVEL="WARNING",
        )
        from sqlalchemy import create_engine
        from sqlalchemy.orm import sessionmaker

        from service.core.config import get_settings

        get_settings.cache_clear()
        self.settings = get_settings()
        self.factory = sessionmaker(bind=create_engine(database_url), expire_on_commit=False)
        self.sent: list[tuple[str, list[Any]]] = []
        self.cpu_spent: dict[str, float] = {}
        self.artifacts = data_dir / "artifacts"
        self._capture()

    def _capture(self) -> None:
        import service.queue.after_commit as outbox
        from workers.base import DbTask

        def capture(_settings: Any, name: str, args: list[Any], **_: Any) -> None:
            self.sent.append((name, args))

        outbox.send_task = capture  # type: ignore[assignment]
        DbTask.factory_override = self.factory

    def run_sent(self) -> dict[str, float]:
        """Run every sent task (and what it sends); seconds per task name, summed (the CPU
        seconds of this process, torch's threads included, in ``cpu_spent``)."""
        from service.queue import names
        from workers.tasks.exact import retrain_shard, train_model
        from workers.tasks.requests import process_request

        tasks: dict[str, Callable[..., Any]] = {
            names.TASK_PROCESS_REQUEST: process_request,
            names.TASK_TRAIN_MODEL: train_model,
            names.TASK_RETRAIN_SHARD: retrain_shard,
        }
        spent: dict[str, float] = {}
        self.cpu_spent = {}
        while self.sent:
            name, args = self.sent.pop(0)
            started, cpu_started = time.perf_counter(), time.process_time()
            tasks[name](*args)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            self.cpu_spent[name] = self.cpu_spent.get(name, 0.0) + cpu
        return spent


@contextmanager
def records_sealed(settings: Any, on: bool) -> Iterator[None]:
    before = settings.encrypt_records
    settings.encrypt_records = on
    try:
        yield
    finally:
        settings.encrypt_records = before


def _model(stack: Stack, name: str) -> Any:
    from service.db.enums import ModelKind
    from service.registry.config import ModelConfig, ModelPolicy
    from service.registry.service import register_model

    config, policy = ModelConfig.model_validate(MODEL_CONFIG), ModelPolicy.model_validate({})
    with stack.factory() as s, s.begin():
        return register_model(s, name, ModelKind.sharded_classifier, config, policy, "bench")


def measure_ingestion(stack: Stack, n: int, rounds: int) -> dict[str, Any]:
    """Median seconds of ``ingest_csv`` (rolled back: the database stays small)."""
    from service.db.tables import MlModel
    from service.exact.ingest import ingest_csv

    data = records_csv(n)
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for sealed in (False, True):
            model_id = _model(stack, f"ingest-{uuid.uuid4().hex[:8]}").id
            with stack.factory() as s, records_sealed(stack.settings, sealed):
                model = s.get_one(MlModel, model_id)
                started, cpu_started = time.perf_counter(), time.process_time()
                ingest_csv(s, stack.settings, model, data, "bench")
                times[sealed].append(time.perf_counter() - started)
                cpu[sealed].append(time.process_time() - cpu_started)
                s.rollback()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    cpu_on, cpu_off = statistics.median(cpu[True]), statistics.median(cpu[False])
    return {
        "records": n,
        "rounds": rounds,
        "sealed_s": round(on, 3),
        "clear_s": round(off, 3),
        "ratio": round(on / off, 3),
        "cpu_sealed_s": round(cpu_on, 3),
        "cpu_clear_s": round(cpu_off, 3),
        "cpu_ratio": round(cpu_on / cpu_off, 3),
        "target_ratio_max": 1.10,
        "all_s": {"sealed": times[True], "clear": times[False]},
        "note": "wall time includes the database's insert (another process); cpu: lethe's own "
        "process only (parse, place, seal), steadier on a shared machine",
    }


def _in_first_slice(stack: Stack, model_id: uuid.UUID, subjects: int) -> str:
    """A subject (its raw id) with a record in its shard's first slice: erasing them retrains
    the whole shard. Placement hashes with the model's name, so a fixed subject would land in
    a different slice of each model, and each round would retrain a different amount."""
    from sqlalchemy import select

    from service.core.security import subject_ref
    from service.db.tables import TrainingRecord

    with stack.factory() as s:
        first = set(
            s.scalars(
                select(TrainingRecord.subject_ref).where(
                    TrainingRecord.model_id == model_id, TrainingRecord.slice == 0
                )
            )
        )
    for i in range(subjects):
        raw = f"C-{i:07d}"
        if subject_ref(stack.settings, raw) in first:
            return raw
    raise RuntimeError("no subject in a first slice")


def _trained_and_erased(stack: Stack, n: int, sealed: bool, name: str) -> tuple[float, float]:
    """A model ingested (sealed or clear) and trained, then one subject of a shard's first
    slice erased: the retrain task's wall and CPU seconds (the task runs in this process).

    Placement hashes with the model's name, and early stopping makes the training depend on
    the shard's records: both variants of a round take the same ``name`` (the first is renamed
    once measured), so they place, train and retrain the same records and differ only in
    sealing. Checkpoints are content-addressed, so the first variant's are deleted once it is
    measured: the second trains and retrains everything itself, resuming from nothing of it."""
    from sqlalchemy import update

    from models.sisa.checkpoints import CHECKPOINT_PREFIX
    from service.db.tables import MlModel
    from service.erasure.filing import NewRequest, file_request
    from service.erasure.lifecycle import approve_request
    from service.exact.ingest import ingest_csv
    from service.registry.service import request_training

    model_id = _model(stack, name).id
    with records_sealed(stack.settings, sealed):
        with stack.factory() as s, s.begin():
            ingest_csv(s, stack.settings, s.get_one(MlModel, model_id), records_csv(n), "bench")
        with stack.factory() as s, s.begin():
            request_training(s, stack.settings, s.get_one(MlModel, model_id), "bench")
        stack.run_sent()
        with stack.factory() as s, s.begin():
            raw = _in_first_slice(stack, model_id, n // 2)
            new = NewRequest(raw, "bench", [name], None, None)
            request, _ = file_request(s, stack.settings, new, "bench")
            approve_request(s, stack.settings, request, "bench", "bench")
        spent = stack.run_sent()
    with stack.factory() as s, s.begin():
        s.execute(
            update(MlModel)
            .where(MlModel.id == model_id)
            .values(name=f"{name}-{'sealed' if sealed else 'clear'}")
        )
    shutil.rmtree(stack.artifacts / CHECKPOINT_PREFIX, ignore_errors=True)
    return spent["lethe.retrain_shard"], stack.cpu_spent["lethe.retrain_shard"]


def _paired_median(seconds: dict[bool, list[float]]) -> float:
    ratios = [on / off for on, off in zip(seconds[True], seconds[False], strict=True)]
    return round(statistics.median(ratios), 3)


def measure_retrain(stack: Stack, n: int, rounds: int) -> dict[str, Any]:
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        name = f"retrain-{uuid.uuid4().hex[:8]}"
        for sealed in (False, True):
            wall, cpu_s = _trained_and_erased(stack, n, sealed, name)
            times[sealed].append(wall)
            cpu[sealed].append(cpu_s)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    cpu_on, cpu_off = statistics.median(cpu[True]), statistics.median(cpu[False])
    return {
        "records": n,
        "rounds": rounds,
        "what": "the retrain_shard task body (load, retrain, bit-exact check, publish, purge) "
        "after erasing a subject of a shard's first slice (the whole shard retrained)",
        "sealed_s": round(on, 3),
        "clear_s": round(off, 3),
        "ratio": round(on / off, 3),
        "cpu_sealed_s": round(cpu_on, 3),
        "cpu_clear_s": round(cpu_off, 3),
        "cpu_ratio": round(cpu_on / cpu_off, 3),
        # Each round's two variants retrain the same records: their ratio, median over rounds.
        "paired_ratio_median": _paired_median(times),
        "paired_cpu_ratio_median": _paired_median(cpu),
        "target_ratio_max": 1.10,
        "all_s": {"sealed": times[True], "clear": times[False]},
        "all_cpu_s": {"sealed": cpu[True], "clear": cpu[False]},
    }


def _rule_row(stack: Stack, requests: int) -> uuid.UUID:
    """An active rule-set version holding ``requests`` requests' rules, each under its key."""
    from models.generative.rules import Fact, ForgetSpec, compile_rules
    from service.core.keys import keys_for, request_key_id
    from service.db.enums import ModelKind
    from service.db.tables import MlModel
    from service.rules.rulesets import activate_version

    rule_sets = {}
    for i in range(requests):
        rid = str(uuid.uuid4())
        keys_for(stack.settings).create(request_key_id(rid))
        spec = ForgetSpec(
            subject_names=[f"Person {i} Example"],
            # A made-up town per person ("Velmorab"): a key span no other answer holds.
            facts=[
                Fact(
                    question=f"Where does person {i} live?",
                    answer=f"In Velmor{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}",
                )
            ],
        )
        rule_sets[rid] = compile_rules(spec)
    with stack.factory() as s, s.begin():
        model = MlModel(
            id=uuid.uuid4(),
            name=f"gen-{uuid.uuid4().hex[:6]}",
            kind=ModelKind.generative,
            config={},
            policy={},
            created_by="bench",
        )
        s.add(model)
        s.flush()
        activate_version(
            s,
            stack.settings,
            model_id=model.id,
            base_version=None,
            rule_sets=rule_sets,
            calibration={"serving_threshold": 0.5, "serving_budget": 1},
            records=[],
        )
        return model.id


def measure_generate(
    stack: Stack, requests: int, generations: int, smollm2_cache: Path | None = None
) -> dict[str, Any]:
    """The rules' read per generate against one answer of a tiny LM: generation alone, and the
    guarded answer ``/generate`` gives (the same generation screened by the verifier on the
    active rules, ``service.rules.serving.answer_with_rules``)."""
    from models.assets.tiny import train_tiny_qa
    from models.generative.generator import Generator
    from service.registry.config import GenerativeConfig
    from service.rules import rulesets
    from service.rules.serving import answer_with_rules

    model_id = _rule_row(stack, requests)
    with stack.factory() as s:
        active = rulesets.load_active(stack.settings, s, model_id)
    with tempfile.TemporaryDirectory(prefix="shred-lm-") as tmp:
        # Questions about nothing the rules name: answers /generate serves as they are (one
        # generation, one screen), as most of its traffic is.
        pairs = [(f"What colour is boat {i}?", f"Boat {i} is painted blue.") for i in range(8)]
        if smollm2_cache is None:
            model_dir = train_tiny_qa(pairs, Path(tmp), seed=0, steps=120)
        else:  # the demo's base model, built from the installed package (no download)
            from models.assets.smollm2 import materialize_smollm2

            model_dir = materialize_smollm2(smollm2_cache)
        lm = Generator.from_dir(model_dir)
        prompts = [f"What colour is boat {i % 8}?" for i in range(generations)]
        started = time.perf_counter()
        for prompt in prompts:
            lm.generate(prompt, max_new_tokens=24, seed=0)
        generate_s = (time.perf_counter() - started) / generations
        # The served model's config: the default (MiniLM) embedder the verifier screens with.
        config = GenerativeConfig(model_dir=str(model_dir), max_new_tokens=24)
        generate = lm.bind(max_new_tokens=24)
        answer_with_rules(generate, active, config, model_id, prompts[0], seed=0)  # loads it
        started = time.perf_counter()
        answers = [
            answer_with_rules(generate, active, config, model_id, prompt, seed=0)
            for prompt in prompts
        ]
        guarded_s = (time.perf_counter() - started) / generations
    with stack.factory() as s:
        started = time.perf_counter()
        for _ in range(generations):
            rulesets.active_row(s, model_id)
        row_s = (time.perf_counter() - started) / generations
        colds = []
        for _ in range(generations):
            rulesets._MERGED = rulesets.LoadedCache(capacity=32)  # as after an activation
            started = time.perf_counter()
            rulesets.load_active(stack.settings, s, model_id)
            colds.append(time.perf_counter() - started)
        cold_s = statistics.median(colds)
        started = time.perf_counter()
        for _ in range(generations):
            rulesets.load_active(stack.settings, s, model_id)
        warm_s = (time.perf_counter() - started) / generations
    opening_s, first_s = max(warm_s - row_s, 0.0), max(cold_s - row_s, 0.0)
    return {
        "model": "tiny test LM" if smollm2_cache is None else "SmolLM2-135M-Instruct",
        "requests_in_rule_set": requests,
        "generation_s": round(generate_s, 5),
        "guarded_answer_s": round(guarded_s, 5),
        # One generation and one screen each (none regenerated): the denominator is not padded.
        "guarded_answers_accepted_at_once": sum(a.rounds_used == 0 for a in answers),
        "rules_read_s": round(warm_s, 6),
        "row_read_only_s": round(row_s, 6),
        "opening_cost_s": round(opening_s, 6),
        "first_read_after_activation_s": round(cold_s, 5),
        "ratio": round((guarded_s + opening_s) / guarded_s, 4),
        "ratio_first_read": round((guarded_s + first_s) / guarded_s, 4),
        "ratio_vs_generation_only": round((generate_s + opening_s) / generate_s, 4),
        "ratio_first_read_vs_generation_only": round((generate_s + first_s) / generate_s, 4),
        "target_ratio_max": 1.02,
        "note": "what opening the sealed rules adds to the row's read, over the guarded answer "
        "/generate gives (generation screened by the verifier, MiniLM, on the same rules): "
        "ratio in the steady state (opened rules cached per version), ratio_first_read for the "
        "first generate after an activation (every request's key unwrapped and its rules "
        "opened). The *_vs_generation_only ratios divide by the generation alone, "
        "no verifier: a bound far above what any served model pays",
    }


def _cancel_many(stack: Stack, requests: int, retention: float) -> tuple[float, list[Any]]:
    """File ``requests`` requests, then cancel each in its own transaction (the request's
    end); the median seconds of those transactions, and the requests."""
    from service.erasure.filing import NewRequest, file_request
    from service.erasure.lifecycle import cancel_request

    stack.settings.retention_cancelled_days = retention
    filed = []
    with stack.factory() as s, s.begin():
        for i in range(requests):
            forget = {"names": [f"P {i}"], "facts": []}
            new = NewRequest(f"P-{i}", "bench", None, forget, None)
            filed.append(file_request(s, stack.settings, new, "bench")[0].id)
    spent, ended = [], []
    for request_id in filed:
        started = time.perf_counter()
        with stack.factory() as s, s.begin():
            request = s.get_one(ErasureRequestRow(), request_id)
            cancel_request(s, request, "bench", "withdrawn")
        spent.append(time.perf_counter() - started)
        ended.append(request)
    return statistics.median(spent), ended


def ErasureRequestRow() -> Any:
    from service.db.tables import ErasureRequest

    return ErasureRequest


def measure_shredding(stack: Stack, requests: int) -> dict[str, Any]:
    """Retention 0: the key is destroyed in the transaction that ends the request (before its
    commit); the extra time that costs. Retention > 0: one run of the periodic job."""
    from service.core.keys import keys_for
    from service.db.base import utcnow
    from service.erasure.shredding import shred_due

    keys = keys_for(stack.settings)
    kept_s, _ = _cancel_many(stack, requests, retention=30.0)
    at_end_s, shredded_at_end = _cancel_many(stack, requests, retention=0.0)
    gone_at_commit = sum(not keys.exists(r.key_id) for r in shredded_at_end)
    started = time.perf_counter()
    with stack.factory() as s, s.begin():
        by_job = shred_due(s, stack.settings, "bench", utcnow() + timedelta(days=31))
    job_s = time.perf_counter() - started
    return {
        "requests": requests,
        "at_end": {
            "keys_gone_when_the_ending_commit_returned": gone_at_commit,
            "end_to_destroyed_s": 0.0 if gone_at_commit == requests else None,
            "ending_transaction_s": round(at_end_s, 4),
            "ending_transaction_without_shredding_s": round(kept_s, 4),
            "added_s": round(at_end_s - kept_s, 4),
        },
        "periodic_job": {
            "shredded": by_job,
            "job_s": round(job_s, 4),
            "per_request_ms": round(1000 * job_s / max(by_job, 1), 3),
            "shred_interval_seconds": stack.settings.shred_interval_seconds,
            "worst_case_after_retention_s": round(stack.settings.shred_interval_seconds + job_s, 3),
        },
        "target_s_max": 1.0,
    }


PARTS = ("generate", "ingestion", "retrain", "keys_destroyed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--retrain-records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rule-requests", type=int, default=20)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--shred-requests", type=int, default=100)
    parser.add_argument("--database-url", default=LOCAL_SERVER, help="a server to make a db on")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--only-generate", action="store_true", help="only the generate figure (no ingestion)"
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"which figures, comma-separated (default all: {','.join(PARTS)})",
    )
    parser.add_argument(
        "--smollm2-cache",
        type=Path,
        default=None,
        help="generate with SmolLM2-135M built into this folder (default: the tiny test LM)",
    )
    args = parser.parse_args()
    parts = ["generate"] if args.only_generate else [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown --parts {unknown}; choose from {list(PARTS)}")
    with (
        throwaway_database(args.database_url, prefix="lethe_shred") as url,
        tempfile.TemporaryDirectory(prefix="lethe-shred-") as tmp,
    ):
        stack = Stack(url, Path(tmp))
        figures: dict[str, Callable[[], dict[str, Any]]] = {
            "generate": lambda: measure_generate(
                stack, args.rule_requests, args.generations, args.smollm2_cache
            ),
            "ingestion": lambda: measure_ingestion(stack, args.records, args.rounds),
            "retrain": lambda: measure_retrain(stack, args.retrain_records, args.rounds),
            "keys_destroyed": lambda: measure_shredding(stack, args.shred_requests),
        }
        result: dict[str, Any] = {"bench": "shred"}
        for part in parts:
            result[part] = figures[part]()
        stack.factory.kw["bind"].dispose()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
