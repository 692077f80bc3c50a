"""Structured logs: one JSON object per line, a request id on every line, no secrets.

* ``RequestIds``: every request gets an id — a well-formed incoming ``X-Request-Id``
  (1 to 64 of ``A-Z a-z 0-9 -``, as set by a load balancer) or a new random one —
  echoed in the response, attached to each log line written while serving it, and
  closed by one access line (method, endpoint, status, duration_ms).  The access
  line names the Flask endpoint, never the raw path or query string, which may
  carry codes and tokens.
* ``JsonFormatter``: ts, level, logger, message, request_id, method, endpoint,
  status, duration_ms (and ``exception`` with the traceback when there is one).
* ``RedactingFilter``, on the handler so it covers every logger (ours, Flask's,
  Werkzeug's, the WSGI server's): masks anything shaped like a resident identity
  number or a unified social credit code, and replaces the value of
  Authorization headers, Bearer/Basic credentials, JWTs, and any
  ``password``/``secret``/``token``/``code``/``assertion``/``verifier``/``otp``
  field (``key=value``, ``key: value``, ``"key": "value"``) by ``[redacted]``.
  Callers already avoid logging such values (audit.py); this is the net under
  them, not a licence to log request bodies.
"""

from __future__ import annotations

import json
import logging
import random as _random
import re
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

# Endpoints a load balancer or Prometheus polls every few seconds: their access
# lines are DEBUG, so INFO logs show traffic rather than probes.
QUIET_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.metrics"})

log = logging.getLogger("sso.access")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# ---- redaction ---------------------------------------------------------------------

# 18-character resident identity numbers (last character a digit or X), the old
# 15-digit ones, and 18-character unified social credit codes (GB 32100: no I, O,
# S, V, Z).  Bounded by non-alphanumerics so longer runs (hashes, ids) are not cut.
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(?:\d{17}[0-9Xx]|\d{15})(?![0-9A-Za-z])")
_CREDIT_CODE = re.compile(r"(?<![0-9A-Za-z])[0-9A-HJ-NP-RTUWXY]{2}\d{6}[0-9A-HJ-NP-RTUWXY]{10}(?![0-9A-Za-z])")
_CREDENTIAL = re.compile(r"(?i)\b(Bearer|Basic|DPoP)(\s+)[A-Za-z0-9._~+/=-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_SENSITIVE = r"[\w-]*(?:authorization|password|passwd|secret|token|assertion|verifier|otp|cookie|code)"
# key=value, key: value, "key": "value", 'key': 'value'.  Tried only where a key can
# start (not inside a run of word characters): the output is the same, as a match
# reproduces its start verbatim, but the search no longer starts again, and backtracks
# through the rest of the word, at every character of every word (~90 -> ~13 us for a
# 100-character audit line).
_SENSITIVE_FIELD = re.compile(
    rf"""(?ix) (?<![\w-]) (["']?{_SENSITIVE}["']?) (\s*[:=]\s*) (["']?) (?!\[redacted\]) [^\s&"',;)}}\]]+ """
)
# ('key', 'value'): the repr of a form or header list
_SENSITIVE_PAIR = re.compile(rf"""(?i)(["']{_SENSITIVE}["']\s*,\s*)(["'])[^"']*\2""")


def _mask_number(match: re.Match[str]) -> str:
    from .identifiers import mask_credit_code, mask_resident_id

    text = match.group(0)
    return mask_resident_id(text) if text[:17].isdigit() else mask_credit_code(text)


def redact(text: str) -> str:
    """``text`` with identity numbers and credit codes masked and credentials removed."""
    text = _CREDENTIAL.sub(r"\1\2[redacted]", text)
    text = _JWT.sub("[redacted-jwt]", text)
    text = _SENSITIVE_PAIR.sub(r"\1\2[redacted]\2", text)
    text = _SENSITIVE_FIELD.sub(r"\1\2\3[redacted]", text)
    text = _ID_NUMBER.sub(_mask_number, text)
    return _CREDIT_CODE.sub(_mask_number, text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "sso_clean", False) and not record.exc_info and not record.stack_info:
            return True  # an access line: built only from a known method, a route name, a status
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# ---- formatting ----------------------------------------------------------------------

_CONTEXT_FIELDS = ("request_id", "method", "endpoint", "status", "duration_ms")


# A request served without Flask's request context (sso.oidc.lane): its id, method,
# endpoint and client address, for the log lines and audit rows written meanwhile.
LANE_REQUEST: ContextVar[dict[str, Any] | None] = ContextVar("sso_lane_request", default=None)


def _request_context() -> dict[str, Any]:
    if not has_request_context():
        lane = LANE_REQUEST.get()
        if lane is None:
            return {}
        return {"request_id": lane["request_id"], "method": lane["method"], "endpoint": lane["endpoint"]}
    return {
        "request_id": g.get("request_id"),
        "method": request.method,
        "endpoint": request.endpoint or "none",
    }


def client_address() -> str | None:
    """The address of the client being served (after any trusted proxy), None outside a request."""
    if has_request_context():
        return request.remote_addr
    lane = LANE_REQUEST.get()
    return lane["remote_addr"] if lane is not None else None


# json.dumps with any non-default option builds a new encoder for every call.
_encode_json = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _entry(created: float, level: str, logger: str, message: str) -> dict[str, Any]:
    """The first fields of a JSON log line (JsonFormatter, and the access line's direct way)."""
    return {
        "ts": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": level,
        "logger": logger,
        "message": message,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line; non-ASCII text kept readable (Chinese names)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = _entry(record.created, record.levelname, record.name, record.getMessage())
        if getattr(record, "endpoint", None) is None:  # access lines carry their own context
            entry.update(_request_context())
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return _encode_json(entry)


class TextFormatter(logging.Formatter):
    """Human-readable lines for development, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None) or _request_context().get("request_id")
        return f"{line} [{rid}]" if rid else line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def make_handler(fmt: str = "json", stream: Any = None) -> logging.Handler:
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    handler.set_name("sso")
    return handler


def configure(fmt: str = "json", level: str = "INFO", stream: Any = None) -> logging.Handler:
    """Send every logger's records through one redacting handler on the root logger.

    Called once per serving process (``sso serve``, ``sso.wsgi``); replaces any
    handler this function installed before, and leaves other handlers alone.
    """
    # No caller lookup (a walk up the stack for every record): neither format prints the
    # source file or line (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    # Nor thread and process names on each record: no format prints them, and the
    # request id ties a request's lines together.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "sso"]:
        root.removeHandler(old)
    handler = make_handler(fmt, stream)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("sso").setLevel(level.upper())
    # Werkzeug's development server writes its own request lines (with query strings):
    # ours replace them.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return handler


# ---- request ids and access lines ------------------------------------------------------


def request_id_from(value: str | None) -> str:
    if value and _REQUEST_ID.fullmatch(value):
        return value
    # 128 random bits from the process's Mersenne Twister (seeded from the OS, reseeded
    # in each forked worker): unique, and a request id is no secret, so it need not cost
    # a getrandom() call on every request as secrets.token_hex does.
    return f"{_random.getrandbits(128):032x}"


def init_app(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = g.get("request_id")
        if rid is None:  # a request that failed before before_request ran
            rid = g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        response.headers[REQUEST_ID_HEADER] = rid
        started = g.get("request_started")
        duration = time.perf_counter() - started if started is not None else 0.0
        access(request.endpoint or "none", request.method, response.status_code, rid, duration)
        return response


def access(endpoint: str, method: str, status: int, rid: str, duration: float) -> None:
    """A served request's metrics and its access line (Flask's hook and sso.oidc.lane)."""
    # The method is the client's word: anything unusual is one label and one word,
    # so neither the metrics' series nor the log line carry arbitrary text.
    if method not in _METHODS:
        method = "OTHER"
    from . import metrics

    try:
        metrics.observe_request(endpoint, method, status, duration)
    except Exception:  # noqa: BLE001 - metrics must never fail a request
        log.exception("could not record request metrics")
    level = logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO
    if not log.isEnabledFor(level):
        return
    message = f"{method} {endpoint} {status}"
    fields = {
        "request_id": rid,
        "method": method,
        "endpoint": endpoint,
        "status": status,
        "duration_ms": round(duration * 1000, 2),
    }
    handler = _sole_json_handler(level)
    if handler is None:
        log.log(level, message, extra={**fields, "sso_clean": True})
        return
    # What the logging package would write through that one handler, without the
    # LogRecord, the logger walk and the formatter's attribute lookups (~15 of ~40 us
    # per request while serving): the same line, with the handler's lock and flush.
    entry = _entry(time.time(), logging.getLevelName(level), log.name, message)
    entry.update(fields)
    handler.acquire()
    try:
        handler.stream.write(_encode_json(entry) + handler.terminator)
        handler.flush()
    except RecursionError:
        raise
    except Exception:  # noqa: BLE001 - as StreamHandler.emit: reported, never raised
        handler.handleError(log.makeRecord(log.name, level, "", 0, message, None, None, extra=fields))
    finally:
        handler.release()


def _sole_json_handler(level: int) -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """The handler an access line at ``level`` reaches when it reaches exactly one, and
    that one is ours as :func:`make_handler` makes it (a stream, :class:`JsonFormatter`,
    only :class:`RedactingFilter`, which passes an access line unchanged); else None
    (another handler, a logger filter, a disabled logger: the logging package decides).
    Walked per call, as ``Logger.callHandlers`` does: handlers come and go (a test's
    capture handler, a reconfiguration)."""
    if log.disabled or log.filters:
        return None
    sole = None
    logger: logging.Logger | None = log
    while logger is not None:
        for handler in logger.handlers:
            if level >= handler.level:
                if sole is not None:
                    return None
                sole = handler
        logger = logger.parent if logger.propagate else None
    if (
        sole is None  # none: the logging package's last resort
        or type(sole) not in (_StderrHandler, logging.StreamHandler)
        or type(sole.formatter) is not JsonFormatter
        or any(type(f) is not RedactingFilter for f in sole.filters)
    ):
        return None
    return sole  # type: ignore[return-value]
