"""The tests mirror the product: ``tests/<package>/<domain>/test_<module>.py`` tests
``<package>/<domain>/<module>.py``, so the tests of a module are found without searching.

Beside the mirrored packages, tests/ holds only ``flows/`` (a request through the API, the
tasks and back, in process), ``integration/`` (real worker processes; marker ``integration``),
``repo/`` (checks of the repository as a whole) and ``support/`` (helpers test modules import;
fixtures are in the conftest.py of the folder whose tests use them)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIRRORED = ("bench", "models", "service", "workers")
OTHER_FOLDERS = ("flows", "integration", "repo", "support")

# Test modules of a mirrored package that name no module of their own, each with its reason.
EXCEPTIONS = {
    "tests/models/test_artifacts_s3.py": "models/artifacts.py against a real S3 endpoint (moto's "
    "server); a module of its own because it is skipped as a whole without s3fs or moto",
    "tests/models/conformal/test_threshold_mapie.py": "models/conformal/threshold.py and "
    "pvalues.py cross-checked against MAPIE; skipped as a whole without mapie",
}


def layout_problems(root: Path, exceptions: dict[str, str]) -> list[str]:
    """Everything under root/tests that breaks the layout, one line each."""
    tests = root / "tests"
    problems = []
    for path in sorted(tests.iterdir()):
        name = path.name
        if path.is_dir() and name not in (*MIRRORED, *OTHER_FOLDERS, "__pycache__"):
            problems.append(f"tests/{name}/: neither a mirrored package nor {OTHER_FOLDERS}")
        elif path.is_file() and name.endswith(".py") and name not in ("__init__.py", "conftest.py"):
            problems.append(f"tests/{name}: a test module belongs in a folder")
    for package in MIRRORED:
        for path in sorted((tests / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            mirror = path.relative_to(tests).parent
            if "__pycache__" in path.parts:
                continue
            if not (root / mirror).is_dir():
                problems.append(f"{rel}: no folder {mirror.as_posix()}/ in the product")
            elif path.name in ("__init__.py", "conftest.py"):
                continue
            elif not path.name.startswith("test_"):
                problems.append(f"{rel}: helpers belong in tests/support/")
            elif rel in exceptions:
                continue
            elif not (root / mirror / f"{path.stem.removeprefix('test_')}.py").is_file():
                problems.append(f"{rel}: no module {mirror.as_posix()}/{path.stem[5:]}.py")
    for rel in exceptions:
        if not (root / rel).is_file():
            problems.append(f"{rel}: listed as an exception but gone")
    return problems


def test_every_test_module_names_a_module_of_the_product() -> None:
    assert layout_problems(ROOT, EXCEPTIONS) == []


def test_every_exception_says_why() -> None:
    assert all(len(reason) > 20 for reason in EXCEPTIONS.values())


def test_the_check_sees_a_test_module_without_its_module(tmp_path: Path) -> None:
    for folder in ("service/erasure", "tests/service/erasure", "tests/flows", "tests/stray"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "service/erasure/lifecycle.py").touch()
    (tmp_path / "tests/service/erasure/test_lifecycle.py").touch()
    (tmp_path / "tests/flows/test_anything_goes.py").touch()
    stray = f"tests/stray/: neither a mirrored package nor {OTHER_FOLDERS}"
    assert layout_problems(tmp_path, {}) == [stray]
    (tmp_path / "tests/service/erasure/test_lifecycles.py").touch()
    (tmp_path / "tests/service/erasure/helpers.py").touch()
    (tmp_path / "tests/service/audit").mkdir()
    (tmp_path / "tests/service/audit/__init__.py").touch()
    (tmp_path / "tests/test_loose.py").touch()
    problems = layout_problems(tmp_path, {"tests/service/gone.py": "a reason that is long enough"})
    assert problems == [
        stray,
        "tests/test_loose.py: a test module belongs in a folder",
        "tests/service/audit/__init__.py: no folder service/audit/ in the product",
        "tests/service/erasure/helpers.py: helpers belong in tests/support/",
        "tests/service/erasure/test_lifecycles.py: no module service/erasure/lifecycles.py",
        "tests/service/gone.py: listed as an exception but gone",
    ]
