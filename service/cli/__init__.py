"""The ``lethe`` command: local administration (database, processes, tokens, users, the audit
log) here; operations over the HTTP API in ``service.ops``."""

from service.cli.main import app, main

__all__ = ["app", "main"]
