"""Settings patched where every part of a test reads them."""

from __future__ import annotations

from typing import Any

import pytest

from service.core.config import Settings, get_settings


def set_everywhere(mp: pytest.MonkeyPatch, settings: Settings, **values: Any) -> None:
    """Set ``values`` on the fixture's settings (the app's) and on ``get_settings()`` (the
    tasks'): once a test has rebuilt the cached settings they are two objects, and a store
    patched on one only leaves records the API sealed without a key in the tasks."""
    for target in {id(s): s for s in (settings, get_settings())}.values():
        for name, value in values.items():
            mp.setattr(target, name, value)
