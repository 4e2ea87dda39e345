"""The audit tests reuse the task-layer fixtures (a trained model, tasks run in process) with
their own artifact store: checkpoints are content-addressed, so a retrain here would otherwise
leave checkpoints that tests/workers then find instead of training."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.core.config import get_settings
from tests.workers.conftest import task_factory, trained_model

__all__ = ["own_artifacts", "task_factory", "trained_model"]


@pytest.fixture(autouse=True)
def own_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(get_settings(), "artifact_url", str(tmp_path / "artifacts"))
    yield
