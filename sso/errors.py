"""The one place that renders errors.

Protocol errors are Authlib's ``OAuth2Error`` classes (one class per error code).
Anything unexpected becomes ``server_error`` with a generic text; the detail goes
to the log only.  A backing service that is down gives ``temporarily_unavailable``
(503): the gateway fails closed.  An error found before the redirect URI is
validated is shown as a page, never redirected (RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.oauth2 import OAuth2Error
from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from .storage import StoreUnavailable

log = logging.getLogger("sso.errors")

# Paths whose clients are programs: they get JSON, never an HTML page.
API_PREFIXES = (
    "/token", "/introspect", "/revoke", "/userinfo", "/jwks", "/.well-known", "/readyz", "/healthz", "/metrics",
)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def wants_json() -> bool:
    return request.path.startswith(API_PREFIXES)


def printable(text: object, limit: int = 200) -> str:
    """Text safe for ``error_description`` (RFC 6749 §5.2: %x20-21 / %x23-5B / %x5D-7E only).

    Error texts may quote what the client sent; anything outside that set becomes "?".
    """
    out = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in str(text))
    return out if len(out) <= limit else out[: limit - 3] + "..."


def json_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": error, "error_description": printable(description)})
    response.status_code = status
    response.headers.update(NO_STORE)
    if headers:
        response.headers.update(headers)
    return response


def _headline(error: str) -> str:
    """What an error code means to a person, in the page's language."""
    from flask_babel import gettext as _

    texts = {
        "invalid_client": _("This portal is not registered or has been disabled."),
        "invalid_request": _("The request is not valid."),
        "unauthorized_client": _("This portal may not use this kind of sign-in."),
        "unsupported_response_type": _("The portal asked for a kind of sign-in this gateway does not offer."),
        "temporarily_unavailable": _("The service is temporarily unavailable. Please try again shortly."),
        "server_error": _("Something went wrong on our side. Please try again later."),
        "not_found": _("This page does not exist."),
        "method_not_allowed": _("The request is not valid."),
        "request_too_large": _("The request is too large."),
    }
    return texts.get(error, _("This request cannot be completed"))


def error_page(status: int, error: str, description: str, **context: Any) -> Response:
    """An HTML error page: used whenever redirecting back to the client is unsafe."""
    body = render_template(
        "error.html", status=status, error=error, description=description, headline=_headline(error), **context
    )
    response = Response(body, status=status, mimetype="text/html")
    response.headers.update(NO_STORE)
    return response


def _forget_body() -> None:
    """Rendering an error must not read the request body again.

    A body that was refused (413) or could not be parsed raises again on every
    read, and rendering a page reads it (the locale selector looks at
    ``request.values``).  Werkzeug caches the parsed body in the request's
    ``__dict__``; an empty one there makes every later read see no body.
    """
    empty = request.parameter_storage_class()
    request.__dict__.setdefault("form", empty)
    request.__dict__.setdefault("files", empty)


def render(status: int, error: str, description: str) -> Response:
    _forget_body()
    if wants_json():
        return json_error(status, error, description)
    return error_page(status, error, description)


def _oauth_error(exc: OAuth2Error) -> tuple[int, str, str]:
    return exc.status_code or 400, exc.error, exc.get_error_description() or exc.error


def _store_down(exc: StoreUnavailable) -> tuple[int, str, str]:
    log.error("short-lived store unavailable: %s", exc)
    return 503, "temporarily_unavailable", "The service is temporarily unavailable."


def _rollback_quietly() -> None:
    """Roll the request's session back; on a connection that died, that fails too: logged.

    SQLAlchemy has invalidated such a connection already, and the app context's
    teardown drops the session (sso.db.close_sessions_quietly).  The client gets the
    answer for the first error, not a 500 for the second.
    """
    from .db import db

    try:
        db.session.rollback()
    except Exception as error:  # noqa: BLE001 - the first error is the one to answer
        log.warning("rolling back after a database error failed too: %s", error.__class__.__name__)


def _db_down(exc: Exception) -> tuple[int, str, str]:
    log.error("database error: %s", exc.__class__.__name__)
    _rollback_quietly()
    return 503, "temporarily_unavailable", "The service is temporarily unavailable."


def _bad_value(exc: DataError) -> tuple[int, str, str]:
    # The database refused a value the client sent (PostgreSQL: a NUL byte, a string
    # longer than its column): the request is bad, the database is up. Not a 503.
    log.warning("database refused a value: %s", exc.orig.__class__.__name__)
    _rollback_quietly()
    return 400, "invalid_request", "The request contains a value that cannot be stored."


_HTTP_ERRORS = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def _http_failure(exc: HTTPException) -> tuple[int, str, str]:
    code = exc.code or 500
    error = _HTTP_ERRORS.get(code, "invalid_request" if code < 500 else "server_error")
    return code, error, exc.description or error


# What each kind of failure tells the client (the most derived class wins, as in Flask).
# HTTPException's handler is registered on its own below (a 405 adds its Allow header).
_FAILURES: dict[type, Any] = {
    HTTPException: _http_failure,
    OAuth2Error: _oauth_error,
    StoreUnavailable: _store_down,
    OperationalError: _db_down,
    DBAPIError: _db_down,
    PoolTimeout: _db_down,  # no pooled connection free in time: busy, not broken
    DataError: _bad_value,
}


def api_error(exc: Exception, method: str, endpoint: str) -> Response:
    """The JSON error a program gets for ``exc``: what the handlers below answer on API paths.

    For requests served outside Flask's request cycle (sso.oidc.lane).
    """
    for cls in type(exc).__mro__:
        classify = _FAILURES.get(cls)
        if classify is not None:
            return json_error(*classify(exc))
    log.exception("unhandled error on %s %s", method, endpoint)
    return json_error(500, "server_error", "The server encountered an unexpected error.")


def register_error_handlers(app: Flask) -> None:
    for cls, classify in _FAILURES.items():
        if cls is HTTPException:
            continue

        def _handler(exc: Exception, classify: Any = classify) -> Response:
            return render(*classify(exc))

        app.register_error_handler(cls, _handler)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = render(*_http_failure(exc))
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # Never a stack trace to the client; the log keeps the detail.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render(500, "server_error", "The server encountered an unexpected error.")
