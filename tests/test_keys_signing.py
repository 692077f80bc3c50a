"""KeyManager.sign makes the compact JWS itself: the bytes joserfc would make, verifiable by PyJWT."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask
from joserfc import jwt as joserfc_jwt

from sso import gateway_of

CLAIMS = {"iss": "https://sso.example", "sub": "s-1", "name": "张三", "exp": 2_000_000_000, "amr": ["pwd", "otp"]}


def _segments(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]


@pytest.mark.parametrize("typ", [None, "at+jwt", "logout+jwt"])
def test_rs256_is_byte_for_byte_what_joserfc_makes(app: Flask, typ: str | None) -> None:
    keys = gateway_of(app).keys
    key = keys.signing_key("RS256")
    ours = keys.sign(dict(CLAIMS), alg="RS256", typ=typ)
    header: dict[str, Any] = {"alg": "RS256", "kid": key.kid}
    if typ:
        header["typ"] = typ
    # RSASSA-PKCS1-v1_5 is deterministic: the same input gives the same signature.
    assert ours == joserfc_jwt.encode(header, dict(CLAIMS), key.key, algorithms=["RS256"])
    assert json.loads(_segments(ours)[0]) == {"typ": typ or "JWT", "alg": "RS256", "kid": key.kid}
    assert pyjwt.decode(ours, key.key.public_key, algorithms=["RS256"]) == CLAIMS


def test_es256_signature_is_the_jws_form_and_verifies(app: Flask) -> None:
    keys = gateway_of(app).keys
    keys.rotate("ES256", activate_in=0)
    key = keys.signing_key("ES256")
    token = keys.sign(dict(CLAIMS), alg="ES256", typ="at+jwt")
    header, _, signature = _segments(token)
    assert json.loads(header) == {"typ": "at+jwt", "alg": "ES256", "kid": key.kid}
    assert len(signature) == 64  # R || S, 32 bytes each (RFC 7518 §3.4), not DER
    assert pyjwt.decode(token, key.key.public_key, algorithms=["ES256"]) == CLAIMS
    assert keys.verify(token, typ="at+jwt")[1] == CLAIMS
    parts = token.split(".")
    broken = bytearray(signature)
    broken[5] ^= 1
    forged = ".".join([parts[0], parts[1], base64.urlsafe_b64encode(bytes(broken)).rstrip(b"=").decode()])
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(forged, key.key.public_key, algorithms=["ES256"])


def test_each_key_and_algorithm_gets_its_own_header(app: Flask) -> None:
    keys = gateway_of(app).keys
    rs = keys.sign({"a": 1}, alg="RS256")
    keys.rotate("ES256", activate_in=0)
    es = keys.sign({"a": 1}, alg="ES256")
    assert json.loads(_segments(rs)[0])["alg"] == "RS256"
    assert json.loads(_segments(es)[0])["alg"] == "ES256"
    keys.rotate("RS256", activate_in=0)
    kid = json.loads(_segments(keys.sign({"a": 1}, alg="RS256"))[0])["kid"]
    assert kid == keys.signing_key("RS256").kid != json.loads(_segments(rs)[0])["kid"]
