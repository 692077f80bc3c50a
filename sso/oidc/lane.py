"""The protocol lane: token, introspection, revocation and userinfo without Flask's request cycle.

Programs call these endpoints far more often than people open pages, and for them
Flask's request machinery (request context, URL matching, the before/after hooks,
finalising the response: ~40 µs) is as much work as the answer itself.
``ProtocolLane`` wraps the WSGI app and serves a well-formed call of

* ``POST /token``, ``POST /introspect``, ``POST /revoke`` — a form body
  (``application/x-www-form-urlencoded``, UTF-8, each parameter once, no query
  string; ``/token`` with a ``grant_type``),
* ``GET /userinfo`` without a body, ``POST /userinfo`` with a form body,

through the **same** code the Flask views use: Authlib's grants and endpoints
(``server.create_token_response`` / ``create_endpoint_response`` with our
``GatewayRequest``) and ``views.userinfo_response``, in an application context
(database session, caches, ``current_app``), with the same response headers
(security headers, ``X-Request-Id``), the same metrics and access line
(``logs.access``) and the same JSON errors (``errors.api_error``) as the hooks
and error handlers give the Flask route.  Log lines and audit rows written
meanwhile carry the request's id and client address (``logs.LANE_REQUEST``).

Anything else goes to Flask unchanged, the body it read put back: another method
or path, a query string, a chunked or oversized body, another content type, a
repeated parameter, bytes that are not UTF-8 — so odd requests get exactly the
answers (400, 405, 413, the JSON error format) they got before.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from werkzeug.datastructures import EnvironHeaders, ImmutableMultiDict
from werkzeug.http import parse_options_header
from werkzeug.wsgi import get_content_length, get_input_stream

from .. import errors, logs, security
from ..logs import REQUEST_ID_HEADER
from .requests import GatewayRequest
from .server import LANE_ANSWERS, LaneAnswer

StartResponse = Callable[..., Any]
FORM_TYPE = "application/x-www-form-urlencoded"
_ENVIRON_REQUEST_ID = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
# Authlib's endpoint names: what /introspect and /revoke answer.
_ENDPOINTS = {"/introspect": "introspection", "/revoke": "revocation"}
# The Flask endpoint names, for metrics and the access line.
_NAMES = {path: f"oidc.{path[1:]}" for path in ("/token", "/introspect", "/revoke", "/userinfo")}
_NO_ARGS: ImmutableMultiDict = ImmutableMultiDict()  # type: ignore[type-arg]
# More fields than any of these endpoints takes: Flask's parser decides.
_MAX_FIELDS = 32


def _form_type(content_type: str | None) -> bool:
    # Flask's request.mimetype: Werkzeug's header parsing (it strips only spaces and tabs).
    return bool(content_type) and parse_options_header(content_type)[0].lower() == FORM_TYPE


def _parse_form(body: bytes) -> ImmutableMultiDict | None:  # type: ignore[type-arg]
    """The form as Werkzeug would parse it, or None when Flask should judge it."""
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, errors="strict", max_num_fields=_MAX_FIELDS)
    except ValueError:  # not UTF-8 (UnicodeDecodeError is a ValueError), or too many fields
        return None
    form = ImmutableMultiDict(pairs)
    if len(form) != len(pairs):
        return None  # a repeated parameter: the view's invalid_request
    return form


class ProtocolLane:
    """WSGI middleware: well-formed protocol calls served without the Flask request cycle."""

    def __init__(self, app: Flask, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()  # as Flask's before_request: reading the body counts
        path = environ.get("PATH_INFO", "")
        name = _NAMES.get(path)
        if name is None or environ.get("QUERY_STRING") or "HTTP_TRANSFER_ENCODING" in environ:
            return self.wsgi_app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        # Werkzeug's reading of the header: None when absent, ASCII digits only, else 0.
        length = get_content_length(environ)
        if method == "GET" and path == "/userinfo" and not length:
            return self._serve(environ, start_response, started, name, method, None)
        limit = self.app.config.get("MAX_CONTENT_LENGTH")  # per call, as Flask reads it
        if (
            method != "POST"
            or not length
            or (limit is not None and length > limit)
            or not _form_type(environ.get("CONTENT_TYPE"))
        ):
            return self.wsgi_app(environ, start_response)
        try:
            # The stream Werkzeug would read: Content-Length bytes (a short body raises),
            # or up to the limit when the server terminates the stream itself.
            body = get_input_stream(environ, max_content_length=limit).read()
        except Exception:  # noqa: BLE001 - a client that went away, a body over the limit: Flask's 400
            body = b""
        form = _parse_form(body) if body else None
        if form is None or (path == "/token" and not form.get("grant_type")):
            environ["wsgi.input"] = io.BytesIO(body)  # Flask reads it again and answers
            return self.wsgi_app(environ, start_response)
        return self._serve(environ, start_response, started, name, method, form)

    def _serve(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        started: float,
        name: str,
        method: str,
        form: ImmutableMultiDict | None,  # type: ignore[type-arg]
    ) -> Iterable[bytes]:
        rid = logs.request_id_from(environ.get(_ENVIRON_REQUEST_ID))
        path = environ["PATH_INFO"]
        ticket = logs.LANE_REQUEST.set(
            {"request_id": rid, "method": method, "endpoint": name, "remote_addr": environ.get("REMOTE_ADDR")}
        )
        answers = LANE_ANSWERS.set(True)
        try:
            with self.app.app_context():
                try:
                    response = self._answer(environ, path, method, form)
                except Exception as exc:  # noqa: BLE001 - the error handlers' answers, never a trace
                    response = errors.api_error(exc, method, path)
                if isinstance(response, LaneAnswer):  # Authlib's JSON answers
                    status, code, headers, body = response
                else:  # userinfo's, the error handlers': a Response, taken apart in the app context
                    headers = response.headers.to_wsgi_list()
                    status, code, body = response.status, response.status_code, response.get_data()
                    response.close()
        finally:
            LANE_ANSWERS.reset(answers)
            logs.LANE_REQUEST.reset(ticket)
        headers.extend(security.EVERY_RESPONSE)
        headers.append((REQUEST_ID_HEADER, rid))
        start_response(status, headers)
        logs.access(name, method, code, rid, time.perf_counter() - started)
        return [body]

    def _answer(self, environ: dict[str, Any], path: str, method: str, form: ImmutableMultiDict | None) -> Any:  # type: ignore[type-arg]
        headers = EnvironHeaders(environ)
        if path == "/userinfo":
            from .views import userinfo_response

            return userinfo_response(headers.get("Authorization", ""), form)
        server = self.app.extensions["sso"].server
        oauth_request = GatewayRequest(method, path, _NO_ARGS, form, headers)
        if path == "/token":
            return server.create_token_response(oauth_request)
        return server.create_endpoint_response(_ENDPOINTS[path], oauth_request)
