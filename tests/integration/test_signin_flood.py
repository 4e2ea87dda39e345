"""A sign-in flood against the real app under uvicorn on a real PostgreSQL cannot starve the
API: the console's sign-in runs in its own lane outside the API's admission slots, so while 40
wrong-password sign-ins pound the door (argon2 each, until the throttle locks the address), an
API caller with a single admission slot and a 3-second queue gets every answer (200, never
503). The flood itself gets only 401 and 429 (the address locked, or no door slot within 10 s),
never a 500. The throttle's own rules are tests/service/web/test_routes_auth.py's."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from service.core.config import Settings
from service.stack.processes import free_port, served
from tests.support.db import fresh_database

pytestmark = pytest.mark.integration
FLOOD = 40


@pytest.fixture(scope="module")
def server(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from service.api.tokens import create_token
    from service.app.factory import create_app
    from service.db.session import session_factory, transaction
    from service.web.accounts import create_user

    tmp: Path = tmp_path_factory.mktemp("signin-flood")
    with fresh_database(pg_server, prefix="lethe_signin_flood") as url:
        settings = Settings(
            database_url=url,
            broker_url="memory://",
            data_dir=tmp,
            environment="test",
            # One API slot and a short wait: sign-ins sharing it would turn API calls into 503s.
            api_max_inflight=1,
            api_max_queued=40,
            api_queue_timeout_seconds=3,
        )
        with transaction(session_factory(url)) as s:
            token = create_token(s, "flood-auditor", "auditor", actor="test")
            create_user(s, "dpo@example.test", "dpo", "a long enough password", "test")
        port = free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="error"
        )
        with served(config):
            yield {"url": f"http://127.0.0.1:{port}", "token": token}


def _sign_in_form(client: httpx.Client) -> str:
    page = client.get("/console/signin")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def test_a_sign_in_flood_does_not_starve_the_api(server: dict[str, Any]) -> None:
    url = server["url"]
    with httpx.Client(base_url=url, timeout=60) as door:
        csrf = _sign_in_form(door)
        # The cookie is Secure (not development): httpx would not send it back over http.
        cookies = dict(door.cookies)

    def knock(i: int) -> int:
        # Every attempt names another account: only the per-address throttle can stop them.
        with httpx.Client(base_url=url, timeout=60, cookies=cookies) as c:
            r = c.post(
                "/console/signin",
                data={"email": f"nobody-{i}@example.test", "password": "wrong", "csrf_token": csrf},
            )
            return r.status_code

    api_answers: list[int] = []
    stop = threading.Event()

    def call_api() -> None:
        headers = {"authorization": f"Bearer {server['token']}"}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as api:
            while not stop.is_set():
                api_answers.append(api.get("/v1/audit/verify").status_code)

    caller = threading.Thread(target=call_api)
    caller.start()
    with ThreadPoolExecutor(max_workers=FLOOD) as pool:
        knocks = Counter(pool.map(knock, range(FLOOD)))
    stop.set()
    caller.join(timeout=60)
    print(f"sign-in flood: {dict(knocks)}; API answers during it: {Counter(api_answers)}")
    assert set(knocks) <= {401, 429} and knocks[429] > 0, knocks
    assert api_answers and set(api_answers) == {200}, Counter(api_answers)
