"""The audit tests reuse the task-layer fixtures: a trained model, tasks run in process."""

from tests.workers.conftest import task_factory, trained_model

__all__ = ["task_factory", "trained_model"]
