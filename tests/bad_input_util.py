"""Shared pieces of the bad-input catalogue: one gateway per test module, forged JWTs.

Most bad-input cases change nothing on the server, so a module shares one gateway
(building one costs ~0.4 s: migrations and key generation); every case still gets
its own cookie-less test client.  Cases that change state use the usual fixtures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from joserfc.jwk import RSAKey

from sso import create_app
from sso.bootstrap import prepare
from sso.clients import create_client
from sso.connectors.local import create_account
from tests import conftest
from tests.conftest import ISSUER, PASSWORD, REDIRECT, USERNAME, Browser, Portal, basic, redeem

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BYE = "https://portal.example.gov.cn/bye"
JWT_PORTAL = "jwt-portal"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in token.split(".")[:2])
    return header, payload


def compact(header: dict[str, Any], claims: Any, secret: bytes | None = None) -> str:
    """A JWS by hand: unsigned when no secret, else HMAC-SHA256 with that secret."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return signing_input + "." + b64(signature)


def public_pem(jwk: dict[str, Any]) -> bytes:
    return RSAKey.import_key(jwk).as_pem(private=False)


@dataclass
class Shared:
    app: Flask
    portal: Portal
    other: Portal
    public: Portal
    jwt_key: Any  # the private_key_jwt portal's RSA key
    jwt_jwk: dict[str, Any]  # ... and its registered public JWK
    attacker_key: Any  # an RSA key nobody registered
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        return self.app.test_client()

    def sign(self, claims: dict[str, Any], typ: str | None) -> str:
        """Signed with the gateway's own current RS256 key."""
        return self.app.extensions["sso"].keys.sign(claims, alg="RS256", typ=typ)  # type: ignore[no-any-return]

    def forge(self, kind: str, real: str) -> str:
        """A bad variant of a real token the gateway issued (access or ID token)."""
        header, claims = parts(real)
        typ, now = header.get("typ"), int(time.time())
        fresh = {**claims, "jti": uuid.uuid4().hex}  # never the real token's jti
        if kind == "garbage":
            return "not-a-jwt"
        if kind == "three-garbage-parts":
            return "a.b.c"
        if kind == "alg-none":
            return compact({**header, "alg": "none"}, claims)
        if kind == "hs256-public-key":
            jwk = next(k for k in self.client().get("/jwks").get_json()["keys"] if k["kid"] == header["kid"])
            return compact({**header, "alg": "HS256"}, claims, public_pem(jwk))
        if kind == "attacker-key":
            headers = {k: v for k, v in header.items() if k != "alg"}  # same kid, another key
            return pyjwt.encode(claims, self.attacker_key, algorithm="RS256", headers=headers)
        if kind == "tampered":
            h, _, s = real.split(".")
            return ".".join([h, b64(json.dumps({**claims, "sub": "someone-else"}).encode()), s])
        if kind == "wrong-issuer":
            return self.sign({**fresh, "iss": "https://evil.example"}, typ)
        if kind == "expired":
            return self.sign({**fresh, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, typ)
        if kind == "not-yet-valid":
            return self.sign({**fresh, "nbf": now + 3600, "exp": now + 7200}, typ)
        if kind == "oversized":
            return real + "A" * 20_000
        if kind == "nul":
            return real[:10] + "\x00" + real[10:]
        if kind == "non-ascii":
            return "ü.ü.ü"
        raise ValueError(kind)

    def assertion(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": JWT_PORTAL, "sub": JWT_PORTAL, "aud": ISSUER + "/token", "iat": now, "exp": now + 60}
        claims.update({"jti": uuid.uuid4().hex, **overrides})
        claims = {k: v for k, v in claims.items() if v is not None}
        return pyjwt.encode(claims, self.jwt_key, algorithm="RS256", headers={"kid": "jwt-1"})

    def bad_assertion(self, kind: str) -> str:
        """A client_assertion for jwt-portal that must not authenticate it."""
        good = self.assertion()
        header, claims = parts(good)
        if kind in {"garbage", "non-ascii", "alg-none", "tampered", "attacker-key"}:
            return self.forge(kind, good)
        if kind == "hs256-public-key":  # the registered public key used as an HMAC secret
            return compact({**header, "alg": "HS256"}, claims, public_pem(self.jwt_jwk))
        if kind == "non-ascii-alg":
            return compact({**header, "alg": "ñ"}, claims, b"x")
        if kind == "sub-not-a-string":
            return compact(header, {**claims, "iss": 123, "sub": 123}, b"x")
        if kind == "json-array-payload":
            return compact(header, [JWT_PORTAL], b"x")
        if kind.startswith("gateway-"):  # tokens the gateway signed, replayed as assertions
            return self.tokens[kind.removeprefix("gateway-")]
        overrides = {
            "wrong-issuer": {"iss": "someone-else"},
            "unknown-client": {"iss": "nobody", "sub": "nobody"},
            "expired": {"iat": 1, "exp": 60},
            "not-yet-valid": {"nbf": 4_000_000_000, "exp": 4_000_000_060},
            "wrong-audience": {"aud": "https://elsewhere.example/token"},
            "missing-jti": {"jti": None},
            "too-long-lived": {"exp": int(time.time()) + 86_400},
        }[kind]
        return self.assertion(**overrides)


def _register(client_id: str, **kwargs: Any) -> Portal:
    reg = create_client(name=client_id, client_id=client_id, **kwargs)
    return Portal(reg.client.client_id, reg.client_secret, (kwargs.get("redirect_uris") or [REDIRECT])[0])


@contextmanager
def shared_gateway(tmp_path: Any) -> Iterator[Shared]:
    app = create_app(conftest.make_settings(tmp_path))
    app.test_client_class = getattr(conftest, "IsolatedClient", app.test_client_class)
    prepare(app)
    with app.app_context():
        jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = pyjwt.algorithms.RSAAlgorithm.to_jwk(jwt_key.public_key(), as_dict=True)
        jwk.update(kid="jwt-1", alg="RS256", use="sig")
        shared = Shared(
            app=app,
            portal=_register(
                "tax-portal",
                redirect_uris=[REDIRECT],
                post_logout_redirect_uris=[BYE],
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
            ),
            other=_register(
                "other-portal",
                redirect_uris=["https://other.example/cb"],
                grant_types=["authorization_code", "client_credentials"],
            ),
            public=_register("mobile-app", redirect_uris=["http://127.0.0.1:7000/cb"], public=True),
            jwt_key=jwt_key,
            jwt_jwk=jwk,
            attacker_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )
        _register(
            JWT_PORTAL,
            redirect_uris=[REDIRECT],
            grant_types=["client_credentials"],
            auth_method="private_key_jwt",
            jwks={"keys": [jwk]},
        )
        create_account(USERNAME, PASSWORD, "Alice")
        shared.tokens = _issue_tokens(shared)
        yield shared


def _issue_tokens(shared: Shared) -> dict[str, str]:
    client = shared.client()
    browser = Browser(client)
    code, verifier = browser.code_for(shared.portal)
    issued = redeem(client, shared.portal, code, verifier).get_json()
    code, verifier = browser.code_for(shared.portal)
    doomed = redeem(client, shared.portal, code, verifier).get_json()["access_token"]
    client.post("/revoke", data={"token": doomed}, headers=basic(shared.portal))
    cc = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(shared.portal)).get_json()
    other = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(shared.other)).get_json()
    _, claims = parts(issued["access_token"])
    return {
        "access-token": issued["access_token"],
        "id-token": issued["id_token"],
        "refresh-token": issued["refresh_token"],
        "revoked": doomed,
        "client-credentials": cc["access_token"],
        "other-portal": other["access_token"],
        # Signed by the gateway, active, of a live grant, but without the openid scope.
        "no-openid-scope": shared.sign({**claims, "scope": "profile", "jti": uuid.uuid4().hex}, "at+jwt"),
    }
