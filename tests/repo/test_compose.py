"""The container packaging: docker-compose.yml, Dockerfile and .dockerignore.

No Docker engine is needed. The compose file is checked three ways:

1. against the Compose specification JSON schema, vendored as ``tests/repo/data/compose-spec.json``.
   It is an unmodified copy of ``compose/config/compose_spec.json`` from Debian's
   ``docker-compose`` package, version 1.29.2-3 (bookworm), Apache-2.0, Copyright 2014-2015
   Docker Inc (see /usr/share/doc/docker-compose/copyright once the package is installed);
2. by ``docker-compose config`` (Debian: ``apt-get install -y docker-compose``) or the
   ``docker compose`` plugin, whichever is present, which interpolates the variables and fails
   on a missing required one; skipped only when neither is installed;
3. by structural assertions on the parsed YAML.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"


# sha256 of compose/config/compose_spec.json in Debian docker-compose 1.29.2-3.
SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"

EXPECTED_SERVICES = {
    "postgres",
    "redis",
    "migrate",
    "api",
    "worker-requests",
    "worker-ml",
    "beat",
    "flower",
}
APP_SERVICES = {"migrate", "api", "worker-requests", "worker-ml", "beat", "flower"}
WORKERS = ("worker-requests", "worker-ml")


# Variables that must come from the environment, never from a committed default.
REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "LETHE_RUNTIME_DB_PASSWORD",
    "LETHE_SECRET_KEY",
    "LETHE_ENCRYPTION_KEY",
    "LETHE_AUDIT_SIGNING_KEY",
    "LETHE_AUDIT_MAC_KEYS",
    "FLOWER_BASIC_AUTH",
)
DUMMY_ENV = {
    "POSTGRES_PASSWORD": "dummy-db-password",
    "LETHE_RUNTIME_DB_PASSWORD": "dummy-runtime-password",
    "LETHE_SECRET_KEY": "dummy-secret-key",
    "LETHE_ENCRYPTION_KEY": "dummy-fernet-key",
    "LETHE_AUDIT_SIGNING_KEY": "dummy-signing-key",
    "LETHE_AUDIT_MAC_KEYS": "k1=dummy-event-key",
    "FLOWER_BASIC_AUTH": "dummy:dummy",
}
TORCH_PIN = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def validator() -> Draft201909Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft201909Validator.check_schema(schema)
    return Draft201909Validator(schema)


def _schema_errors(validator: Draft201909Validator, document: Any) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    )


def test_vendored_schema_is_the_unmodified_debian_copy() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256, (
        "tests/repo/data/compose-spec.json differs from the vendored copy"
    )


def test_compose_file_is_valid_against_the_compose_spec(
    compose: dict[str, Any], validator: Draft201909Validator
) -> None:
    assert _schema_errors(validator, compose) == []


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        (("services", "api"), "depend_on", ["postgres"]),  # misspelt key
        (("services", "api", "depends_on", "postgres"), "condition", "service_ready"),
        (("services", "worker-ml"), "ports", "8000"),  # wrong type
        ((), "unknown_top_level", {}),
    ],
)
def test_schema_rejects_a_broken_compose_file(
    compose: dict[str, Any],
    validator: Draft201909Validator,
    where: tuple[str, ...],
    key: str,
    value: Any,
) -> None:
    broken = json.loads(json.dumps(compose))
    node = broken
    for part in where:
        node = node[part]
    node[key] = value
    assert _schema_errors(validator, broken), f"schema accepted {(*where, key)} = {value!r}"


def test_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def _run_config(env_vars: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "neither `docker-compose` nor the `docker compose` plugin is installed "
            "(Debian: apt-get install -y docker-compose)"
        )
    # A clean environment: nothing the developer exported, and an empty env file instead of
    # any local .env, so only the compose file itself decides what is required.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LETHE_", "POSTGRES_", "FLOWER_", "COMPOSE_"))
    }
    env.update(env_vars)
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("", encoding="utf-8")
    return subprocess.run(
        [
            *command,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(empty_env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_config_resolves_with_the_required_variables(tmp_path: Path) -> None:
    result = _run_config(DUMMY_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == EXPECTED_SERVICES
    for name in APP_SERVICES:
        environment = resolved["services"][name]["environment"]
        assert environment["LETHE_SECRET_KEY"] == DUMMY_ENV["LETHE_SECRET_KEY"], name
        assert environment["LETHE_ENCRYPTION_KEY"] == DUMMY_ENV["LETHE_ENCRYPTION_KEY"], name
        # The services connect as the runtime login, never as the owner.
        assert DUMMY_ENV["LETHE_RUNTIME_DB_PASSWORD"] in environment["LETHE_DATABASE_URL"], name
        assert DUMMY_ENV["POSTGRES_PASSWORD"] not in environment["LETHE_DATABASE_URL"], name
    migrate = resolved["services"]["migrate"]["environment"]
    assert DUMMY_ENV["POSTGRES_PASSWORD"] in migrate["LETHE_MIGRATION_DATABASE_URL"]
    assert resolved["services"]["worker-ml"]["command"][:3] == ["worker", "--queues", "ml"]


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_compose_config_fails_without_a_required_secret(missing: str, tmp_path: Path) -> None:
    env_vars = {k: v for k, v in DUMMY_ENV.items() if k != missing}
    result = _run_config(env_vars, tmp_path)
    assert result.returncode != 0, f"compose config succeeded without {missing}"
    assert missing in result.stderr


def test_service_set(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == EXPECTED_SERVICES


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):  # short syntax: only "service_started"
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


@pytest.mark.parametrize("name", ["api", *WORKERS])
def test_api_and_worker_wait_for_healthy_postgres_redis_and_migration(
    compose: dict[str, Any], name: str
) -> None:
    deps = _depends_on(compose["services"][name])
    assert deps.get("postgres") == "service_healthy"
    assert deps.get("redis") == "service_healthy"
    assert deps.get("migrate") == "service_completed_successfully"


def test_migrate_is_one_shot_after_healthy_postgres(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate.get("restart", "no") == "no"
    assert _depends_on(migrate).get("postgres") == "service_healthy"


def test_backing_services_have_healthchecks_and_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["image"].split(":")[1].startswith("7")
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    pg_volumes = [str(v).split(":")[0] for v in services["postgres"]["volumes"]]
    assert any(v in compose.get("volumes", {}) for v in pg_volumes), pg_volumes


def test_api_serves_on_8000_with_a_healthz_healthcheck(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["command"][:1] == ["serve"]
    assert any(str(p).endswith(":8000") for p in api["ports"]), api["ports"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])


def test_flower_runs_the_celery_app_on_5555(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    argv = [*flower["entrypoint"], *flower["command"]]
    assert argv[0] == "celery" and "flower" in argv
    assert "workers.celery_app:celery_app" in argv
    assert any(str(p).endswith(":5555") for p in flower["ports"]), flower["ports"]


def _queues(command: list[str]) -> set[str]:
    queues: set[str] = set()
    for i, arg in enumerate(command):
        if arg in ("--queues", "-Q") and i + 1 < len(command):
            queues.update(command[i + 1].split(","))
        elif arg.startswith("--queues="):
            queues.update(arg.split("=", 1)[1].split(","))
    return queues


def test_workers_split_the_requests_and_ml_queues(compose: dict[str, Any]) -> None:
    requests = compose["services"]["worker-requests"]["command"]
    ml = compose["services"]["worker-ml"]["command"]
    assert requests[0] == ml[0] == "worker"
    assert _queues(requests) == {"requests"} and _queues(ml) == {"ml"}


def test_ml_worker_can_scale_out(compose: dict[str, Any]) -> None:
    # `--scale worker-ml=N` needs no fixed name and no published port.
    ml = compose["services"]["worker-ml"]
    assert "container_name" not in ml and "ports" not in ml


def test_api_runs_no_worker(compose: dict[str, Any]) -> None:
    assert "--with-worker" not in compose["services"]["api"]["command"]


def _named_mounts(service: dict[str, Any], declared: dict[str, Any]) -> dict[str, str]:
    """Named-volume mounts of a service, as {volume name: target path}."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source"), volume.get("target")
        else:
            source, target, *_ = str(volume).split(":")
        if source in declared:
            mounts[source] = target
    return mounts


@pytest.mark.parametrize("worker_name", WORKERS)
def test_api_and_worker_share_the_artifact_volume(
    compose: dict[str, Any], worker_name: str
) -> None:
    declared = compose.get("volumes") or {}
    api = _named_mounts(compose["services"]["api"], declared)
    worker = _named_mounts(compose["services"][worker_name], declared)
    shared = {name for name in api.keys() & worker.keys() if api[name] == worker[name]}
    assert shared, f"api {api} and worker {worker} share no named volume"
    for name in ("api", worker_name):
        artifact_url = compose["services"][name]["environment"]["LETHE_ARTIFACT_URL"]
        assert artifact_url in {api[v] for v in shared}, (name, artifact_url)


_REFERENCE = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?[^}]*\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def test_checkpoints_are_shared_by_the_signers_and_out_of_the_databases_reach(
    compose: dict[str, Any],
) -> None:
    """Every process that signs checkpoints writes to one volume; PostgreSQL never mounts it."""
    declared = compose.get("volumes") or {}
    signers = ("api", "worker-requests", "worker-ml", "beat")
    for name in signers:
        env = compose["services"][name]["environment"]
        mounts = _named_mounts(compose["services"][name], declared)
        assert mounts.get("audit-checkpoints") == env["LETHE_AUDIT_CHECKPOINT_URL"], name
    assert "audit-checkpoints" not in _named_mounts(compose["services"]["postgres"], declared)


def test_secrets_are_required_variables_without_defaults(compose: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    code = "\n".join(
        line.split(" #", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#")
    )
    for secret in REQUIRED_SECRETS:
        refs = [m for m in _REFERENCE.finditer(code) if secret in (m["name"], m["bare"])]
        assert refs, f"{secret} is never taken from the environment"
        for ref in refs:
            assert ref["op"] == ":?", (
                f"{secret} is referenced as {ref[0]!r}: use ${{{secret}:?...}}"
            )
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        for key in (
            "LETHE_SECRET_KEY",
            "LETHE_ENCRYPTION_KEY",
            "LETHE_AUDIT_SIGNING_KEY",
            "LETHE_AUDIT_MAC_KEYS",
        ):
            assert re.fullmatch(rf"\$\{{{key}:\?[^}}]*\}}", environment[key]), (name, key)
    postgres_env = compose["services"]["postgres"]["environment"]
    assert postgres_env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_no_env_file_is_tracked() -> None:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "--", ".env", ".env.*"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == [], f"secrets file(s) tracked by git: {tracked}"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    lines = [
        line
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(args.split())))
    return instructions


def test_dockerfile_uses_python_311_slim() -> None:
    instructions = _dockerfile_instructions()
    arg_defaults = dict(
        args.split("=", 1) for kw, args in instructions if kw == "ARG" and "=" in args
    )
    stages: set[str] = set()
    bases = []
    for kw, args in instructions:
        if kw == "FROM":
            words = args.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: arg_defaults[m[1] or m[2]], words[0])
            if image not in stages:  # FROM <earlier stage> is not a base image
                bases.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    assert bases == ["python:3.11-slim"] * len(bases) and bases, bases


def _pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in a RUN instruction, in file order."""
    installs = []
    for kw, args in _dockerfile_instructions():
        if kw != "RUN":
            continue
        for command in re.split(r"&&|\|\||;", args):
            words = [w.strip("\"'") for w in command.split()]
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    installs.append(words[i + 2 :])
                    break
    return installs


def _index_urls(words: list[str]) -> set[str]:
    urls = set()
    for i, word in enumerate(words):
        for flag in ("--index-url", "--extra-index-url", "-i"):
            if word == flag and i + 1 < len(words):
                urls.add(words[i + 1].rstrip("/"))
            elif word.startswith(flag + "="):
                urls.add(word.split("=", 1)[1].rstrip("/"))
    return urls


def test_dockerfile_installs_cpu_torch_pinned_before_the_package() -> None:
    installs = _pip_installs()
    torch_installs = [
        i for i, words in enumerate(installs) if any(re.match(r"torch\b", w) for w in words)
    ]
    assert torch_installs, "torch is not installed explicitly"
    for i in torch_installs:
        words = installs[i]
        assert TORCH_PIN in words, words
        assert CPU_INDEX in _index_urls(words), words
    package_installs = [
        i for i, words in enumerate(installs) if any(re.match(r"\.(\[|$)", w) for w in words)
    ]
    assert package_installs, "the lethe package is not installed with `pip install .`"
    assert min(torch_installs) < min(package_installs), "torch must be installed first"
    assert any("flower" in words for words in installs), "flower is not installed"


def test_dockerfile_torch_pin_matches_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [
        d.replace(" ", "") for d in pyproject["project"]["dependencies"] if re.match(r"torch\b", d)
    ]
    assert pins == [TORCH_PIN]


def test_dockerfile_runs_as_non_root_with_lethe_entrypoint() -> None:
    instructions = _dockerfile_instructions()
    users = [args for kw, args in instructions if kw == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    entrypoints = [args for kw, args in instructions if kw == "ENTRYPOINT"]
    assert entrypoints and json.loads(entrypoints[-1]) == ["lethe"]


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", ".venv"} <= patterns
