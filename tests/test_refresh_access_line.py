"""The access line written straight through the one JSON handler (sso.logs.access).

Every token response (a refresh above all) ends with one access line.  When the only
handler it would reach is the serving processes' own (``logs.configure``: a stream,
the JSON formatter, the redacting filter), ``access`` writes the line through that
handler without a LogRecord: these tests hold that line to be byte for byte the one
the logging package writes, and anything else (another handler, a logger filter, a
text format) to go through the logging package as before.
"""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from sso import logs
from tests import test_ops

CALLS = [
    ("oidc.token", "POST", 200, "a" * 32, 0.01234),
    ("oidc.token", "BREW", 400, "r-42", 0.0),  # an unusual method: one word
    ("ops.healthz", "GET", 200, "lb-7f3a-0001", 1.5),  # a probe: DEBUG
    ("web.login", "GET", 200, "名", 0.000049),  # non-ASCII kept readable
]


captured = test_ops.captured  # the serving processes' log configuration, into a buffer


@pytest.fixture
def configured(captured: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The serving processes' configuration (test_ops.captured), one fixed clock."""
    monkeypatch.setattr(time, "time", lambda: 1_796_000_000.123456)
    return captured


def ours_only() -> None:
    """As in a serving process: without pytest's capture handlers, which it puts on the
    root logger for each test's call (a second handler)."""
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() == "sso"]


def written(stream: io.StringIO) -> list[str]:
    lines = stream.getvalue().splitlines(keepends=True)
    stream.seek(0)
    stream.truncate()
    return lines


def test_the_direct_line_is_the_logging_packages_line(configured, monkeypatch):
    ours_only()
    handler = logs._sole_json_handler(logging.INFO)
    assert handler is not None and handler.stream is configured  # the direct way is taken
    for call in CALLS:
        logs.access(*call)
    direct = written(configured)
    monkeypatch.setattr(logs, "_sole_json_handler", lambda level: None)  # the logging package's way
    for call in CALLS:
        logs.access(*call)
    assert direct == written(configured)
    assert len(direct) == len(CALLS) and all(line.endswith("\n") for line in direct)
    first = json.loads(direct[0])
    assert first == {
        "ts": "2026-11-30T00:53:20.123Z",
        "level": "INFO",
        "logger": "sso.access",
        "message": "POST oidc.token 200",
        "request_id": "a" * 32,
        "method": "POST",
        "endpoint": "oidc.token",
        "status": 200,
        "duration_ms": 12.34,
    }
    assert json.loads(direct[1])["message"] == "OTHER oidc.token 400"
    assert json.loads(direct[2])["level"] == "DEBUG"
    assert '"名"' in direct[3]


def test_a_second_handler_or_a_filter_leaves_it_to_the_logging_package(configured):
    ours_only()
    other = io.StringIO()
    extra = logging.StreamHandler(other)
    logging.getLogger("sso").addHandler(extra)
    try:
        assert logs._sole_json_handler(logging.INFO) is None
        logs.access("oidc.token", "POST", 200, "r-1", 0.001)
    finally:
        logging.getLogger("sso").removeHandler(extra)
    assert other.getvalue() == "POST oidc.token 200\n"  # both handlers had the record
    assert json.loads(written(configured)[0])["request_id"] == "r-1"

    # An extra handler that the level keeps out does not count (Logger.callHandlers).
    extra.setLevel(logging.ERROR)
    logging.getLogger("sso").addHandler(extra)
    try:
        assert logs._sole_json_handler(logging.INFO) is not None
    finally:
        logging.getLogger("sso").removeHandler(extra)

    class NoProbes(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno > logging.DEBUG

    access_log = logging.getLogger("sso.access")
    access_log.addFilter(NoProbes())
    try:
        assert logs._sole_json_handler(logging.DEBUG) is None
        logs.access("ops.healthz", "GET", 200, "r-2", 0.001)
    finally:
        access_log.filters.clear()
    assert written(configured) == []  # the logger's filter decided


def test_not_configured_or_text_goes_through_the_logging_package():
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        root.handlers[:] = []
        assert logs._sole_json_handler(logging.INFO) is None  # the last resort decides
        stream = io.StringIO()
        logs.configure("text", "INFO", stream=stream)
        ours_only()
        assert logs._sole_json_handler(logging.INFO) is None
        logs.access("oidc.token", "POST", 200, "r-3", 0.001)
        assert "POST oidc.token 200 [r-3]" in stream.getvalue()
    finally:
        root.handlers[:] = saved
