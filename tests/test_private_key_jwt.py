"""private_key_jwt client authentication (RFC 7523 §2.2, §3): signature, audience, jti replay."""

from __future__ import annotations

import time
import uuid

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sso.clients import create_client
from tests.conftest import ISSUER
from tests.tokens_util import verify

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def signer(app):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = pyjwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid="portal-key-1", alg="ES256", use="sig")
    create_client(
        name="Key portal",
        client_id="key-portal",
        redirect_uris=["https://key.example/cb"],
        grant_types=["client_credentials"],
        auth_method="private_key_jwt",
        jwks={"keys": [jwk]},
    )
    return key


def assertion(key, **overrides):
    now = int(time.time())
    claims = {
        "iss": "key-portal",
        "sub": "key-portal",
        "aud": ISSUER + "/token",
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": "portal-key-1"})


def token_request(client, jwt_assertion):
    return client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": jwt_assertion,
        },
    )


def test_valid_assertion_gets_a_token(client, signer):
    response = token_request(client, assertion(signer))
    assert response.status_code == 200, response.text
    assert verify(client, response.get_json()["access_token"], typ="at+jwt")["sub"] == "key-portal"


def test_issuer_is_also_an_accepted_audience(client, signer):
    assert token_request(client, assertion(signer, aud=ISSUER)).status_code == 200


def test_replayed_assertion_is_refused(client, signer):
    once = assertion(signer)
    assert token_request(client, once).status_code == 200
    replay = token_request(client, once)
    assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "https://elsewhere.example/token"},
        {"exp": int(time.time()) - 3600},
        {"jti": None},
        {"sub": "someone-else"},
        {"exp": int(time.time()) + 86400},  # a long-lived assertion is a credential, not a proof
    ],
    ids=["wrong-aud", "expired", "no-jti", "sub-mismatch", "too-long-lived"],
)
def test_bad_assertions_are_invalid_client(client, signer, overrides):
    response = token_request(client, assertion(signer, **overrides))
    assert response.status_code in (400, 401)
    assert response.get_json()["error"] == "invalid_client"


def test_assertion_signed_by_another_key_is_refused(client, signer):
    other = ec.generate_private_key(ec.SECP256R1())
    response = token_request(client, assertion(other))
    assert response.get_json()["error"] == "invalid_client"
