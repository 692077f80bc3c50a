"""Introspection (RFC 7662) and revocation (RFC 7009)."""

from __future__ import annotations

from sso.clients import create_client
from tests.conftest import ISSUER, Portal, basic, expected_sub, redeem


def tokens_for(browser, client, portal):
    code, verifier = browser.code_for(portal)
    return redeem(client, portal, code, verifier).get_json()


def introspect(client, portal, token, **extra):
    return client.post("/introspect", data={"token": token, **extra}, headers=basic(portal))


def test_active_access_token(browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    response = introspect(client, portal, tokens["access_token"])
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["active"] is True
    assert body["client_id"] == portal.client_id
    assert body["sub"] == expected_sub(portal, account)
    assert body["scope"] == "openid profile"
    assert body["iss"] == ISSUER and body["token_type"] == "Bearer"
    assert body["exp"] > body["iat"]
    assert "gid" not in body  # internal grant id stays internal


def test_active_refresh_token(browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    body = introspect(client, portal, tokens["refresh_token"], token_type_hint="refresh_token").get_json()
    assert body["active"] is True and body["client_id"] == portal.client_id


def test_unknown_token_is_inactive(client, portal):
    assert introspect(client, portal, "garbage").get_json() == {"active": False}


def test_another_portal_cannot_introspect_my_token(app, browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    other = create_client(name="Other", client_id="other", redirect_uris=["https://o.example/cb"])
    body = introspect(client, Portal("other", other.client_secret), tokens["access_token"]).get_json()
    assert body == {"active": False}


def test_introspection_requires_client_authentication(browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    response = client.post("/introspect", data={"token": tokens["access_token"]})
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"


def test_revoking_an_access_token(browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    response = client.post("/revoke", data={"token": tokens["access_token"]}, headers=basic(portal))
    assert response.status_code == 200
    assert introspect(client, portal, tokens["access_token"]).get_json() == {"active": False}
    userinfo = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    assert userinfo.status_code == 401
    assert 'error="invalid_token"' in userinfo.headers["WWW-Authenticate"]
    # The refresh token of the same grant keeps working: only that access token died.
    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, headers=basic(portal)
    )
    assert refreshed.status_code == 200


def test_revoking_a_refresh_token_ends_its_grant(browser, client, portal, account):
    tokens = tokens_for(browser, client, portal)
    response = client.post(
        "/revoke", data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}, headers=basic(portal)
    )
    assert response.status_code == 200
    assert introspect(client, portal, tokens["refresh_token"]).get_json() == {"active": False}
    # RFC 7009 §2.1: access tokens of the same grant are revoked too.
    assert introspect(client, portal, tokens["access_token"]).get_json() == {"active": False}


def test_revoking_an_unknown_token_is_200(client, portal):
    # RFC 7009 §2.2: invalid tokens do not cause an error response.
    response = client.post("/revoke", data={"token": "nonsense"}, headers=basic(portal))
    assert response.status_code == 200


def test_public_client_revokes_its_own_token(browser, client, public_portal, account):
    code, verifier = browser.code_for(public_portal)
    tokens = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": public_portal.redirect_uri,
            "code_verifier": verifier,
            "client_id": public_portal.client_id,
        },
    ).get_json()
    response = client.post("/revoke", data={"token": tokens["refresh_token"], "client_id": public_portal.client_id})
    assert response.status_code == 200
    again = client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": public_portal.client_id,
        },
    )
    assert again.get_json()["error"] == "invalid_grant"
