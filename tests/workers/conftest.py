"""Every test here calls worker tasks in process, on the test's session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tasks_on_the_test_session(task_factory: None) -> None:
    """tests/conftest.py's task_factory, for every test of this folder."""
