"""Where the database is: a configured server, or the embedded one the CLI started."""

from __future__ import annotations

from service.config import Settings


class DatabaseNotConfigured(RuntimeError):
    pass


def database_url(settings: Settings) -> str:
    if settings.database_url is None:
        raise DatabaseNotConfigured(
            "LETHE_DATABASE_URL is not set; start lethe through its CLI (lethe serve / demo), "
            "which runs an embedded PostgreSQL, or point it at a server"
        )
    return settings.database_url
