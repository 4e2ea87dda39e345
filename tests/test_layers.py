"""Import direction (docs/ARCHITECTURE.md): `models` imports nothing of ours, `service` never
imports `workers`, and no module in `workers/tasks` runs SQL."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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
