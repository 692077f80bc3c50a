"""Prometheus metrics: requests per endpoint, sign-ins, tokens, back-channel logouts.

Labels are bounded: the Flask endpoint name (never the raw path), the HTTP method
and status, the login result and connector id, the grant type and portal
(client_id: one per registered portal), the delivery result.

Several worker processes: prometheus-client's multiprocess mode.  It is chosen
when ``PROMETHEUS_MULTIPROC_DIR`` is set *before* this module is first imported
(``sso serve --production`` sets it to an emptied folder before it loads
anything); each process then writes its samples to files there and ``/metrics``
adds up every process's files.  Without it, the process's own registry is served.

``/metrics`` is mounted only when ``metrics_enabled`` is true, and when
``metrics_token`` is set it requires ``Authorization: Bearer <metrics_token>``.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from flask import Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "sso_http_requests_total", "HTTP requests answered, by Flask endpoint.", ["endpoint", "method", "status"]
)
LATENCY = Histogram(
    "sso_http_request_duration_seconds",
    "Time to answer an HTTP request, by Flask endpoint.",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
LOGINS = Counter("sso_logins_total", "Sign-in attempts, by result and identity connector.", ["result", "connector"])
TOKENS = Counter(
    "sso_tokens_issued_total", "Token responses issued, by grant type and portal.", ["grant_type", "portal"]
)
LOGOUT_DELIVERIES = Counter(
    "sso_logout_deliveries_total",
    "Back-channel logout delivery attempts, by result (delivered, retry, failed).",
    ["result"],
)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


_REQUEST_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_TOKEN_CHILDREN: dict[tuple[str, str], Any] = {}


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    # The labelled children are looked up once per (endpoint, method, status), not per
    # request (labels() takes a lock and builds its key every time).
    key = (endpoint, method, status)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        children = (REQUESTS.labels(endpoint, method, str(status)), LATENCY.labels(endpoint, method))
        if len(_REQUEST_CHILDREN) < 4096:
            _REQUEST_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)


def login(result: str, connector: str | None) -> None:
    LOGINS.labels(result, connector or "unknown").inc()


def token_issued(grant_type: str, portal: str) -> None:
    # As for observe_request: the labelled child looked up once per (grant type, portal).
    key = (grant_type, portal)
    child = _TOKEN_CHILDREN.get(key)
    if child is None:
        child = TOKENS.labels(grant_type, portal)
        if len(_TOKEN_CHILDREN) < 16384:
            _TOKEN_CHILDREN[key] = child
    child.inc()


def logout_delivery(result: str) -> None:
    LOGOUT_DELIVERIES.labels(result).inc()


def mark_process_dead(pid: int) -> None:
    """A worker exited: drop its live-gauge files (called by the server's master)."""
    if multiprocess_mode():
        _multiprocess.mark_process_dead(pid)


def exposition() -> bytes:
    if multiprocess_mode():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def _authorised() -> bool:
    expected = current_app.extensions["sso"].settings.metrics_token
    if not expected:
        return True
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode())


def metrics_response() -> Response:
    """The exposition, or 401 without the configured bearer token (sso.ops mounts it)."""
    if not _authorised():
        response = Response('{"error": "invalid_token"}', status=401, mimetype="application/json")
        response.headers["WWW-Authenticate"] = 'Bearer realm="sso-metrics"'
        return response
    response = Response(exposition(), mimetype=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
