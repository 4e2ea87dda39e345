"""Import direction (docs/ARCHITECTURE.md): `models` imports nothing of ours, `service` never
imports `workers`, the folders of `service` stand in a fixed order of floors and import only
downwards, and no module in `workers/tasks` runs SQL."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SQL_NAMES = {"select", "insert", "update", "delete", "text", "func"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _top(name: str) -> str:
    return name.split(".")[0]


def test_models_import_nothing_of_ours() -> None:
    for path in _modules("models"):
        ours = {n for n in _imports(path) if _top(n) in {"service", "workers"}}
        assert not ours, f"{path.relative_to(ROOT)} imports {sorted(ours)}"


def test_service_never_imports_workers() -> None:
    for path in _modules("service"):
        ours = {n for n in _imports(path) if _top(n) == "workers"}
        assert not ours, f"{path.relative_to(ROOT)} imports {sorted(ours)}"


def test_no_task_module_runs_sql() -> None:
    for path in _modules("workers/tasks"):
        imported = _imports(path)
        sql = {n for n in imported if _top(n) == "sqlalchemy" and n.split(".")[-1] in SQL_NAMES}
        tables = {n for n in imported if n.startswith("service.db.tables")}
        calls = {
            node.func.attr
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"execute", "scalar", "scalars", "get", "get_one", "add"}
        }
        assert not (sql or tables or calls), f"{path.relative_to(ROOT)}: {sql | tables | calls}"


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sqlalchemy import select\nfrom service.db.tables import Job\n")
    assert "sqlalchemy.select" in _imports(bad) and "service.db.tables" in _imports(bad)


def test_service_root_holds_only_packages() -> None:
    loose = sorted(p.name for p in (ROOT / "service").glob("*.py"))
    assert loose == ["__init__.py"]


# The floors of service/, from the ground up (docs/ARCHITECTURE.md draws them). A folder may
# import folders on lower floors only: never one on its own floor or above.
SERVICE_FLOORS: list[set[str]] = [
    {"core"},
    {"db"},
    {"audit", "queue", "stack"},
    {"erasure"},
    {"jobs", "reports"},
    {"registry"},
    {"exact", "rules"},
    {"finetune"},
    {"planner"},
    {"api"},
    {"web"},
    {"app"},
    {"ops", "demo"},
    {"cli"},
]


def _floor_of() -> dict[str, int]:
    return {folder: n for n, floor in enumerate(SERVICE_FLOORS) for folder in floor}


def _folder_imports() -> set[tuple[str, str, str]]:
    """(importing folder, imported folder, importing file) across service/'s folders."""
    found = set()
    for path in _modules("service"):
        parts = path.relative_to(ROOT / "service").parts
        if len(parts) < 2:
            continue
        for name in _imports(path):
            segments = name.split(".")
            if segments[0] == "service" and len(segments) > 1 and segments[1] != parts[0]:
                found.add((parts[0], segments[1], str(path.relative_to(ROOT))))
    return found


def test_every_service_folder_has_a_floor() -> None:
    folders = {p.name for p in (ROOT / "service").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(_floor_of())


def test_service_folders_import_only_downwards() -> None:
    floor = _floor_of()
    upward = sorted(
        f"{path}: {src} (floor {floor[src]}) imports {dst} (floor {floor[dst]})"
        for src, dst, path in _folder_imports()
        if dst in floor and floor[dst] >= floor[src]
    )
    assert not upward, "\n".join(upward)


def test_no_two_service_folders_import_each_other() -> None:
    pairs = {(src, dst) for src, dst, _ in _folder_imports()}
    assert not {(a, b) for a, b in pairs if (b, a) in pairs}


def test_the_floor_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from service.planner.plan import plan_request\n")
    floor = _floor_of()
    imported = {n.split(".")[1] for n in _imports(bad) if n.startswith("service.")}
    assert any(floor[dst] >= floor["exact"] for dst in imported)
