"""The SSO hop without Flask's request cycle: a signed-in browser gets a code at once.

``GET /authorize`` from a browser with a gateway session, for a portal it may use
without a page (consented, nothing to ask), is the call a federation makes most
after the protocol calls of sso.oidc.lane, and Flask's request machinery (request
context, URL matching, the before/after hooks, finalising the response) was about
a sixth of it.  The same goes for ``GET /authorize/resume``, the request resumed
after the login or consent page.  ``HopLane`` wraps the WSGI app and answers such a
request through the **same** code the Flask views run
(``sso.oidc.authorize.code_or_none``), in an application context, with the
headers the hooks give the Flask route (the page headers of sso.security,
``X-Request-Id``), the same metrics and access line (``logs.access``), and the
request's id and client address on its log lines and audit row
(``logs.LANE_REQUEST``).

Everything else goes to Flask, and so do the other outcomes, decided before
anything is written: no session, an expired interaction, a page to show (login,
consent, step-up), an error page or error redirect, a session that ended
meanwhile.  An exception goes to Flask's error handlers, which answer it as they
always did, the hop not retried.  Requests Flask parses differently are not
taken: another method or path, a body, a ``lang`` parameter (its cookie is set by
a hook), a query string that is not UTF-8.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401 - registers the "werkzeug.url_quote" codec error handler
from flask import Flask, g
from werkzeug.datastructures import EnvironHeaders, ImmutableMultiDict
from werkzeug.http import parse_cookie
from werkzeug.wsgi import get_content_length

from .. import logs, security
from .. import session as browser_session
from ..logs import REQUEST_ID_HEADER
from . import authorize as authorize_flow
from .requests import GatewayRequest

StartResponse = Callable[..., Any]
_ENVIRON_REQUEST_ID = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
_NO_FORM: ImmutableMultiDict = ImmutableMultiDict()  # type: ignore[type-arg]
# The paths taken, with their Flask endpoint names (for metrics and the access line).
_ENDPOINTS = {"/authorize": "oidc.authorize", "/authorize/resume": "oidc.authorize_resume"}


def _args(query: str) -> ImmutableMultiDict | None:  # type: ignore[type-arg]
    """``request.args`` as Werkzeug parses it, or None when Flask should."""
    try:
        text = query.encode("latin-1").decode()
    except UnicodeError:
        return None
    return ImmutableMultiDict(parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote"))


class HopLane:
    """WSGI middleware: the SSO hop's code served without the Flask request cycle."""

    def __init__(self, app: Flask, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self.cookie = browser_session.cookie_name(bool(app.extensions["sso"].settings.development))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if (
            path not in _ENDPOINTS
            or environ.get("REQUEST_METHOD") != "GET"
            or "HTTP_COOKIE" not in environ
            or not environ.get("QUERY_STRING")
            or "HTTP_TRANSFER_ENCODING" in environ
            or get_content_length(environ)
        ):
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        cookie = parse_cookie(environ).get(self.cookie)
        args = _args(environ["QUERY_STRING"]) if cookie else None
        if args is None or "lang" in args:
            return self.wsgi_app(environ, start_response)
        rid = logs.request_id_from(environ.get(_ENVIRON_REQUEST_ID))
        endpoint = _ENDPOINTS[path]
        ticket = logs.LANE_REQUEST.set(
            {"request_id": rid, "method": "GET", "endpoint": endpoint, "remote_addr": environ.get("REMOTE_ADDR")}
        )
        cookie_ticket = browser_session.LANE_COOKIE.set(cookie)
        loaded_ticket = authorize_flow.LANE_LOADED.set({})  # interactions read once per request
        answer = failure = None
        try:
            with self.app.app_context():
                try:
                    response = self._answer(path, args, environ)
                except Exception as exc:  # noqa: BLE001 - answered by Flask's error handlers below
                    response, failure = None, exc
                if response is not None:
                    # As Werkzeug sends it (the Location made a URI), then the hooks' headers.
                    headers = response.get_wsgi_headers(environ).to_wsgi_list()
                    headers.extend(security.missing({name.lower() for name, _ in headers}, response.mimetype))
                    answer = response.status, response.status_code, headers, response.get_data()
                    response.close()
        finally:
            authorize_flow.LANE_LOADED.reset(loaded_ticket)
            browser_session.LANE_COOKIE.reset(cookie_ticket)
            logs.LANE_REQUEST.reset(ticket)
        # After the application context ended: Flask starts from a clean one.
        if failure is not None:
            return self._error(environ, start_response, failure, rid, started)
        if answer is None:
            return self.wsgi_app(environ, start_response)
        status, code, headers, body = answer
        headers.append((REQUEST_ID_HEADER, rid))
        start_response(status, headers)
        logs.access(endpoint, "GET", code, rid, time.perf_counter() - started)
        return [body]

    @staticmethod
    def _answer(path: str, args: ImmutableMultiDict, environ: dict[str, Any]) -> Any:  # type: ignore[type-arg]
        """The Flask view's answer when it is a code (views.authorize / authorize_resume), else None."""
        if path == "/authorize":
            oauth_request = GatewayRequest("GET", path, args, _NO_FORM, EnvironHeaders(environ))
            return authorize_flow.code_or_none(oauth_request)
        uid = args.get("interaction", "")
        interaction = authorize_flow.load_interaction(uid)
        if interaction is None:
            return None  # expired: the view's error page
        oauth_request = GatewayRequest.from_stored(interaction["args"])
        return authorize_flow.code_or_none(oauth_request, interaction_id=uid)

    def _error(
        self, environ: dict[str, Any], start_response: StartResponse, failure: Exception, rid: str, started: float
    ) -> Iterable[bytes]:
        """The answer Flask gives when its view raises ``failure`` (flask.Flask.wsgi_app's steps)."""
        app = self.app
        ctx = app.request_context(environ)
        error: BaseException | None = None
        try:
            ctx.push()
            g.request_id, g.request_started = rid, started  # as the before_request hook sets them
            try:
                try:
                    raise failure
                except Exception as exc:  # noqa: BLE001 - handle_user_exception re-raises what it cannot handle
                    response = app.finalize_request(app.handle_user_exception(exc))
            except Exception as exc:  # noqa: BLE001 - Flask's 500
                error = exc
                response = app.handle_exception(exc)
            return response(environ, start_response)  # type: ignore[no-any-return]
        finally:
            ctx.pop(error)
