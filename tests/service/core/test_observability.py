"""LETHE_LOG_FORMAT=json: one JSON object per line, with the request id, and an exception's
type but never its message (which could quote data)."""

from __future__ import annotations

import json
import logging

from service.core.observability import CorrelationFilter, JsonFormatter, correlation_id


def test_json_lines_carry_the_request_id_and_no_exception_text() -> None:
    record = logging.LogRecord("lethe.test", logging.ERROR, __file__, 1, "failed: %s", ("x",), None)
    try:
        raise ValueError("subject alice@example.org")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    token = correlation_id.set("req-123")
    try:
        CorrelationFilter().filter(record)
    finally:
        correlation_id.reset(token)
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["request_id"] == "req-123" and entry["level"] == "ERROR"
    assert entry["message"] == "failed: x" and entry["exception"] == "ValueError"
    assert "alice" not in line and "\n" not in line
