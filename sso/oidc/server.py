"""The Authlib authorization server, wired to our storage, errors and issuer."""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer as FlaskAuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import current_app

from ..db import db
from ..models import Client
from .requests import GatewayRequest


class GatewayIssuer(IssuerParameter):
    """RFC 9207: every authorization response, error or not, names its issuer."""

    def get_issuer(self) -> str:
        return current_app.extensions["sso"].settings.issuer  # type: ignore[no-any-return]


def query_client(client_id: Any) -> Client | None:
    # A disabled portal does not exist as far as the protocol is concerned.
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return None
    client = db.session.execute(
        db.select(Client).filter_by(client_id=client_id)
    ).scalar_one_or_none()
    if client is None or client.disabled:
        return None
    return client


def save_token(token: dict[str, Any], request: Any) -> None:
    """Grants persist their own state; nothing generic to save."""


class AuthorizationServer(FlaskAuthorizationServer):
    def __init__(self) -> None:
        super().__init__(query_client=query_client, save_token=save_token)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        # Our own request type: URLs come from the issuer, and a stored
        # authorization request (resumed after login) passes straight through.
        if isinstance(request, OAuth2Request):
            return request
        return GatewayRequest.from_flask()

    def handle_response(self, status_code: int, payload: Any, headers: Any):  # type: ignore[no-untyped-def]
        response = super().handle_response(status_code, payload, headers)
        if isinstance(payload, dict):
            response.headers["Content-Type"] = "application/json"
            # RFC 6749 §5.1: token responses (and errors) are never cached.
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response

