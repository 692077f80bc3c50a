"""UserInfo endpoint (OIDC Core §5.3) with Bearer tokens (RFC 6750)."""

from __future__ import annotations

import pytest

from tests.conftest import basic, expected_sub, redeem


@pytest.fixture
def tokens(browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    return redeem(client, portal, code, verifier).get_json()


def test_get_with_bearer_header(client, portal, tokens, account):
    response = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {"sub": expected_sub(portal, account), "name": "Alice", "preferred_username": "alice"}


def test_post_with_form_token(client, portal, tokens, account):
    response = client.post("/userinfo", data={"access_token": tokens["access_token"]})
    assert response.status_code == 200 and response.get_json()["sub"] == expected_sub(portal, account)


def test_openid_only_scope_returns_only_sub(browser, client, portal, account):
    code, verifier = browser.code_for(portal, scope="openid")
    token = redeem(client, portal, code, verifier).get_json()["access_token"]
    assert client.get("/userinfo", headers={"Authorization": "Bearer " + token}).get_json() == {
        "sub": expected_sub(portal, account)
    }


def test_no_token_gets_a_bare_challenge(client):
    response = client.get("/userinfo")
    assert response.status_code == 401
    # RFC 6750 §3.1: no error code when the request had no authentication.
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="sso"'


def test_two_ways_of_sending_the_token_is_invalid_request(client, tokens):
    response = client.post(
        "/userinfo",
        data={"access_token": tokens["access_token"]},
        headers={"Authorization": "Bearer " + tokens["access_token"]},
    )
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_request"


def test_client_credentials_token_is_not_accepted(client, portal):
    token = client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal)).get_json()[
        "access_token"
    ]
    response = client.get("/userinfo", headers={"Authorization": "Bearer " + token})
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_id_token_is_not_an_access_token(client, tokens):
    response = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["id_token"]})
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_token"
