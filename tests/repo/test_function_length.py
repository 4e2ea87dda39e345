"""Functions a reader holds in one view: no function of the product (models, service, workers)
is longer than 60 lines, from its first decorator to its last line. ruff's C90 and PLR0915
bound complexity and statements; this bounds length, which they do not."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60
# A split that would hurt the reader, with its reason. Keep this list short.
ALLOWED: dict[str, str] = {}


def _lengths(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            assert node.end_lineno is not None
            found.append((node.name, node.end_lineno - start + 1))
    return found


def _too_long(paths: list[Path]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{name} ({lines} lines)"
        for path in paths
        for name, lines in _lengths(path)
        if lines > MAX_LINES and f"{path.relative_to(ROOT)}:{name}" not in ALLOWED
    ]


def test_no_product_function_is_longer_than_sixty_lines() -> None:
    paths = [
        p for package in ("models", "service", "workers") for p in (ROOT / package).rglob("*.py")
    ]
    assert not _too_long(paths)


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    long_one = tmp_path / "long.py"
    long_one.write_text(f"def long_one() -> None:\n{body}\n")
    assert _lengths(long_one) == [("long_one", MAX_LINES + 1)]
