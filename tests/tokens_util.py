"""Independent verification of what the server signs: PyJWT against the published JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt as pyjwt

from tests.conftest import ISSUER


def jwks_keys(client: Any) -> dict[str, Any]:
    return {k["kid"]: k for k in client.get("/jwks").get_json()["keys"]}


def verify(client: Any, token: str, *, audience: str | None = None, typ: str | None = None) -> dict[str, Any]:
    header = pyjwt.get_unverified_header(token)
    jwk = jwks_keys(client)[header["kid"]]
    key = pyjwt.PyJWK(jwk)
    if typ is not None:
        assert header.get("typ") == typ
    return pyjwt.decode(
        token,
        key.key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=ISSUER,
        options={"verify_aud": audience is not None, "require": ["exp", "iat", "iss"]},
    )


def at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def unverified(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
