"""Discovery and JWKS answered in front of Flask: precomputed bytes, no per-request work.

The two documents are public, cacheable and the same for everyone, and portals
(and their libraries) fetch them often.  ``StaticDocuments`` wraps the WSGI app and
answers a plain ``GET``/``HEAD`` of exactly these paths itself — the body and ETag
computed once per change (``KeyManager.jwks_document``, the discovery document at
start-up), the headers the Flask views would send (ETag, Cache-Control, CORS,
nosniff, no-referrer, X-Request-Id), ``304`` for a matching ``If-None-Match`` —
and counts them in the request metrics under the same endpoint names.

Anything else goes to Flask unchanged: other paths and methods, a query string, a
request body (so junk and oversized requests get exactly the answers they got
before: 405, 413, the JSON error format).  The access line of these requests is
DEBUG, as for health probes: they carry nothing worth auditing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.http import parse_etags

from .. import metrics
from ..logs import REQUEST_ID_HEADER, request_id_from

log = logging.getLogger("sso.access")

DISCOVERY_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
JWKS_PATH = "/jwks"
DISCOVERY_MAX_AGE = 3600
# Shorter than the key publish lead, so clients see a new key before it signs.
JWKS_MAX_AGE = 300
_ENVIRON_REQUEST_ID = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")

StartResponse = Callable[..., Any]


def _headers(etag: str, max_age: int) -> list[tuple[str, str]]:
    return [
        ("ETag", etag),
        ("Cache-Control", f"public, max-age={max_age}"),
        ("Access-Control-Allow-Origin", "*"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]


class StaticDocuments:
    """WSGI middleware: the discovery document and the JWKS, without the Flask stack."""

    def __init__(
        self,
        wsgi_app: Callable[..., Iterable[bytes]],
        discovery: Callable[[], tuple[bytes, str]],
        jwks: Callable[[], tuple[bytes, str]],
    ) -> None:
        self.wsgi_app = wsgi_app
        self._routes: dict[str, tuple[str, Callable[[], tuple[bytes, str]], int]] = {
            JWKS_PATH: ("oidc.jwks", jwks, JWKS_MAX_AGE),
        }
        for path in DISCOVERY_PATHS:
            self._routes[path] = ("oidc.discovery", discovery, DISCOVERY_MAX_AGE)
        self._cache: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def _static_headers(self, etag: str, max_age: int) -> list[tuple[str, str]]:
        key = (etag, str(max_age))
        headers = self._cache.get(key)
        if headers is None:
            if len(self._cache) > 16:  # a few key rotations: start again
                self._cache.clear()
            headers = self._cache[key] = _headers(etag, max_age)
        return headers

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = self._routes.get(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD")
        if (
            route is None
            or (method != "GET" and method != "HEAD")
            or environ.get("QUERY_STRING")
            or environ.get("CONTENT_LENGTH") not in (None, "", "0")
            or "HTTP_TRANSFER_ENCODING" in environ
        ):
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        endpoint, document, max_age = route
        body, etag = document()
        headers = list(self._static_headers(etag, max_age))
        headers.append((REQUEST_ID_HEADER, request_id_from(environ.get(_ENVIRON_REQUEST_ID))))
        match = environ.get("HTTP_IF_NONE_MATCH")
        # RFC 9110 §13.1.2: If-None-Match compares weakly (W/"x" matches "x").
        if match and parse_etags(match).contains_weak(etag.strip('"')):
            status, code, out = "304 NOT MODIFIED", 304, b""
        else:
            status, code, out = "200 OK", 200, body
            headers.append(("Content-Type", "application/json"))
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        seconds = time.perf_counter() - started
        try:
            metrics.observe_request(endpoint, method, code, seconds)
        except Exception:  # noqa: BLE001 - metrics must never fail a request
            log.exception("could not record request metrics")
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s %d", method, endpoint, code, extra={"status": code, "duration_ms": round(seconds * 1000, 2)}
            )
        return [out] if method == "GET" else []
