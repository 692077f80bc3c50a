"""OpenID Connect provider: Authlib server wiring, grants, tokens, claims, endpoints."""

from __future__ import annotations

from flask import Flask

from .client_auth import PrivateKeyJWT
from .discovery import document
from .endpoints import EndSession, Introspection, Revocation
from .grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    OpenIDConnectCode,
    RefreshTokenGrant,
    S256CodeChallenge,
)
from .hop import HopLane
from .lane import ProtocolLane
from .server import AuthorizationServer, GatewayIssuer
from .static import StaticDocuments
from .tokens import make_token_generator


def init_app(app: Flask) -> None:
    gateway = app.extensions["sso"]
    server = AuthorizationServer(client_cache_ttl=gateway.settings.client_cache_ttl)
    server.init_app(app)
    server.register_token_generator("default", make_token_generator())
    server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT())
    server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), OpenIDConnectCode()])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)
    server.register_endpoint(EndSession)
    server.register_extension(GatewayIssuer())
    gateway.server = server
    app.config["SSO_DISCOVERY"] = document(gateway.settings)

    def jwks() -> tuple[bytes, str]:
        if gateway.keys.reload_due():  # every key_refresh_interval: one query, in an app context
            with app.app_context():
                return gateway.keys.jwks_document()  # type: ignore[no-any-return]
        return gateway.keys.jwks_document()  # type: ignore[no-any-return]

    # Discovery and JWKS in front of Flask (sso.oidc.static), then the protocol calls
    # (sso.oidc.lane) and the SSO hop (sso.oidc.hop): the same answers, without
    # Flask's request cycle.
    app.wsgi_app = StaticDocuments(  # type: ignore[method-assign]
        ProtocolLane(app, HopLane(app, app.wsgi_app)), lambda: app.config["SSO_DISCOVERY"], jwks
    )

    from .views import bp

    app.register_blueprint(bp)
