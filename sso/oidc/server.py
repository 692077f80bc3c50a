"""The Authlib authorization server, wired to our storage, errors and issuer."""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any, NamedTuple

from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Response, current_app
from werkzeug.http import HTTP_STATUS_CODES

from ..db import db
from ..errors import printable
from ..models import Client
from .requests import GatewayRequest

log = logging.getLogger("sso.server")

_JSON_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_JSON_HEADER_NAMES = frozenset(name.lower() for name, _ in _JSON_HEADERS)

# Form parameters that carry client credentials other than the Authorization header.
CREDENTIAL_PARAMS = ("client_secret", "client_assertion")


class LaneAnswer(NamedTuple):
    """A JSON answer as the protocol lane (sso.oidc.lane) sends it, without a Werkzeug Response."""

    status: str  # the status line Werkzeug would send ("200 OK")
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


# Set by the protocol lane while it calls the server: Authlib's JSON answers come back
# as LaneAnswer (building a Response it would only take apart again cost ~5-8 us).
LANE_ANSWERS: ContextVar[bool] = ContextVar("sso_lane_answers", default=False)


def _status_line(code: int) -> str:
    # As werkzeug.sansio.response.Response sets it from a status code.
    return f"{code} {HTTP_STATUS_CODES.get(code, 'UNKNOWN').upper()}"


class GatewayIssuer(IssuerParameter):
    """RFC 9207: every authorization response, error or not, names its issuer."""

    def get_issuer(self) -> str:
        return current_app.extensions["sso"].settings.issuer  # type: ignore[no-any-return]


class ClientCache:
    """Portals this process looked up, kept ``ttl`` seconds: no query per token request.

    Entries are detached snapshots (expunged from the request's session, every
    column loaded), shared read-only between threads.  The staleness bound is
    ``ttl`` (setting ``client_cache_ttl``): a registration changed by another process
    — disabled, deleted, secret rotated, by ``sso clients`` or another instance — is
    seen here at most ``ttl`` seconds later.  Changes made through ``sso.clients``
    in this process invalidate their entry at once.  Unknown ids are not cached
    (a new registration is usable at once, and junk ids cannot fill the cache).
    """

    MAX_ENTRIES = 20_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._clock = time.monotonic
        self._entries: dict[str, tuple[float, Client]] = {}

    def get(self, client_id: str) -> Client | None:
        entry = self._entries.get(client_id)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            self._entries.pop(client_id, None)
            return None
        return entry[1]

    def put(self, client: Client) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[client.client_id] = (self._clock() + self.ttl, client)

    def invalidate(self, client_id: str | None = None) -> None:
        if client_id is None:
            self._entries.clear()
        else:
            self._entries.pop(client_id, None)


def query_client(client_id: Any) -> Client | None:
    # A disabled portal does not exist as far as the protocol is concerned.
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64 or not client_id.isprintable():
        # Control characters (NUL) never name a client, and some databases refuse them.
        return None
    cache: ClientCache = current_app.extensions["sso"].server.client_cache
    client = cache.get(client_id)
    if client is None:
        client = db.session.execute(
            db.select(Client).filter_by(client_id=client_id)
        ).scalar_one_or_none()
        if client is None:
            return None
        # Detached with every column loaded: a commit later in this request cannot
        # expire it, and other threads may read it.
        db.session.expunge(client)
        cache.put(client)
    if client.disabled:
        return None
    return client


def save_token(token: dict[str, Any], request: Any) -> None:
    """Grants persist their own state; nothing generic to save."""


class AuthorizationServer(FlaskAuthorizationServer):
    def __init__(self, client_cache_ttl: float = 0) -> None:
        super().__init__(query_client=query_client, save_token=save_token)
        self.client_cache = ClientCache(client_cache_ttl)

    def create_token_response(self, request: Any = None) -> Any:
        return super().create_token_response(self.create_oauth2_request(request))

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        # Our own request type: URLs come from the issuer, and a stored
        # authorization request (resumed after login) passes straight through.
        if isinstance(request, OAuth2Request):
            return request
        return GatewayRequest.from_flask()

    def authenticate_client(self, request: Any, methods: Any, endpoint: str = "token") -> Any:
        form = request.form
        if request.headers.get("Authorization") and any(k in form for k in CREDENTIAL_PARAMS):
            # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
            raise InvalidRequestError("Use exactly one client authentication method.")
        try:
            return super().authenticate_client(request, methods, endpoint)
        except OAuth2Error:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            # Authlib decodes Basic credentials and assertion headers without guarding
            # against non-UTF-8 bytes or non-ASCII text; malformed credentials are
            # invalid_client (RFC 6749 §5.2), never a server error.
            log.info("malformed client credentials: %s", exc.__class__.__name__)
            # RFC 6749 §5.2: 401 (with a challenge) when the Authorization header was used.
            status = 401 if request.headers.get("Authorization") else 400
            raise InvalidClientError(status_code=status, description="The client credentials are malformed.") from None

    def handle_error_response(self, request: Any, error: OAuth2Error):  # type: ignore[no-untyped-def]
        if error.status_code == 401 and error.error != "invalid_client":
            # RFC 6749 §5.2: 400 unless client authentication failed; a 401 needs a
            # WWW-Authenticate challenge (RFC 9110 §15.5.2), which only invalid_client has.
            error.status_code = 400
        status, body, headers = error(self.get_error_uri(request, error))
        if isinstance(body, dict):
            description = error.get_error_description() or body.get("error_description") or error.error
            body["error_description"] = printable(description)
        return self.handle_response(status, body, headers)

    def handle_response(self, status_code: int, payload: Any, headers: Any):  # type: ignore[no-untyped-def]
        if not isinstance(payload, dict):
            return super().handle_response(status_code, payload, headers)
        # RFC 6749 §5.1: token responses (and errors) are JSON and never cached.  The
        # header list is built once here rather than set one by one on the response.
        fixed = [(k, v) for k, v in headers or () if k.lower() not in _JSON_HEADER_NAMES]
        fixed.extend(_JSON_HEADERS)
        body = json.dumps(payload)
        if LANE_ANSWERS.get():
            data = body.encode()
            fixed.append(("Content-Length", str(len(data))))
            return LaneAnswer(_status_line(status_code), status_code, fixed, data)
        return Response(body, status=status_code, headers=fixed)

