"""The floor under the protocol endpoints: Flask + Authlib with nothing of the gateway.

    .venv/bin/python benchmarks/floor.py [--requests N]

Builds a minimal Flask app with Authlib's own AuthorizationServer, its
client_credentials grant and its RFC 7662 introspection endpoint, a client and a
token held in memory (plain comparison of the secret, no database, no hooks, no
logging, no metrics), and calls it as a WSGI application in this process, one
request at a time.  Prints CPU microseconds per request (the best of 5 batches)
and what that allows per core, beside an RSA-2048 signature and a bare Flask view.
This is what any gateway built on Flask + Authlib pays before doing its own work;
an HTTP server adds its own cost on top (granian: ~25-30 us per request, see
README.md).  Stops by itself; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask
from joserfc import jwt
from joserfc.jwk import RSAKey

SECRET = "s" * 43
KEY = RSAKey.generate_key(2048, private=True)


class MemoryClient(ClientMixin):
    client_id = "portal"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret == SECRET

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


CLIENT = MemoryClient()


class MemoryToken:
    def check_client(self, client: Any) -> bool:
        return True

    def get_scope(self) -> str:
        return "openid"

    def get_expires_in(self) -> int:
        return 600

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = ["client_secret_basic"]

    def query_token(self, token: str, hint: str | None) -> MemoryToken:
        return MemoryToken()

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        return True

    def introspect_token(self, token: Any) -> dict[str, Any]:
        return {"active": True, "client_id": "portal", "scope": "openid", "exp": 2_000_000_000}


def make_app(sign: bool) -> Flask:
    app = Flask("floor")

    def token_generator(**kwargs: Any) -> dict[str, Any]:
        claims = {"iss": "https://sso.example.gov.cn", "sub": "portal", "aud": "portal", "client_id": "portal",
                  "iat": 1_700_000_000, "exp": 1_700_000_600, "jti": "j" * 22, "scope": "openid"}
        value = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "k"}, claims, KEY) if sign else "x" * 40
        return {"access_token": value, "token_type": "Bearer", "expires_in": 600}

    server = AuthorizationServer(app, query_client=lambda cid: CLIENT if cid == "portal" else None,
                                 save_token=lambda token, request: None)
    server.register_grant(grants.ClientCredentialsGrant)
    server.register_endpoint(Introspection)
    server.register_token_generator("default", token_generator)
    app.post("/token", endpoint="token")(lambda: server.create_token_response())
    app.post("/introspect", endpoint="introspect")(lambda: server.create_endpoint_response("introspection"))
    app.get("/trivial", endpoint="trivial")(lambda: "ok")
    return app


AUTH = "Basic " + base64.b64encode(f"portal:{SECRET}".encode()).decode()


def environ(method: str, path: str, body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "sso.example.gov.cn",
        "SERVER_PORT": "443", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "HTTP_AUTHORIZATION": AUTH, "HTTP_HOST": "sso.example.gov.cn",
    }


def per_request(call: Any, n: int) -> float:
    for _ in range(200):
        call()
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            call()
        best = min(best, (time.process_time() - started) / n)
    return best * 1e6


def wsgi_call(app: Flask, method: str, path: str, body: bytes) -> Any:
    statuses: list[str] = []

    def start(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def call() -> None:
        b"".join(app(environ(method, path, body), start))
        if not statuses[-1].startswith("200"):
            raise SystemExit(f"{path} answered {statuses[-1]}")

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    n = parser.parse_args().requests
    plain, signing = make_app(sign=False), make_app(sign=True)
    claims = {"iss": "https://sso.example.gov.cn", "sub": "portal", "exp": 1_700_000_600, "jti": "j" * 22}
    rows = [
        ("RSA-2048 signature of a JWT (joserfc)", per_request(lambda: jwt.encode({"alg": "RS256"}, claims, KEY), n)),
        ("Flask, a view returning 'ok'", per_request(wsgi_call(plain, "GET", "/trivial", b""), n)),
        ("Flask + Authlib introspection (in memory)",
         per_request(wsgi_call(plain, "POST", "/introspect", b"token=" + b"a" * 300), n)),
        ("Flask + Authlib client_credentials, unsigned token",
         per_request(wsgi_call(plain, "POST", "/token", b"grant_type=client_credentials"), n)),
        ("Flask + Authlib client_credentials, RS256 JWT",
         per_request(wsgi_call(signing, "POST", "/token", b"grant_type=client_credentials"), n)),
    ]
    print(f"| floor, in this process ({n} requests x 5, best batch) | CPU us/request | per core, no HTTP server |")
    print("|---|---|---|")
    for label, micros in rows:
        print(f"| {label} | {micros:,.0f} | {1e6 / micros:,.0f}/s |")


if __name__ == "__main__":
    main()
