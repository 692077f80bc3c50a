"""Token endpoint, authorization_code grant: PKCE, single use, ID and access tokens."""

from __future__ import annotations

import threading

from sso.clients import create_client
from tests.conftest import basic, expected_sub, pkce_pair, redeem
from tests.tokens_util import at_hash, verify


def test_id_token_claims_verified_independently(browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    response = redeem(client, portal, code, verifier)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    claims = verify(client, body["id_token"], audience=portal.client_id)
    assert claims["sub"] == expected_sub(portal, account)
    assert claims["azp"] == portal.client_id
    assert claims["nonce"] == "n-456"
    assert claims["at_hash"] == at_hash(body["access_token"])
    assert claims["amr"] == ["pwd"] and claims["acr"]
    assert {"auth_time", "sid", "exp", "iat"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 3600


def test_access_token_is_rfc9068_jwt(browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    access = redeem(client, portal, code, verifier).get_json()["access_token"]
    claims = verify(client, access, audience=portal.client_id, typ="at+jwt")
    assert claims["client_id"] == portal.client_id
    assert claims["sub"] == expected_sub(portal, account)
    assert claims["scope"] == "openid profile"
    assert claims["exp"] - claims["iat"] == 600
    assert len(claims["jti"]) >= 16


def test_es256_id_tokens_for_a_client_that_asks(app, browser, client, account):
    reg = create_client(
        name="EC portal", client_id="ec", redirect_uris=["https://ec.example/cb"], id_token_signed_response_alg="ES256"
    )
    from tests.conftest import Portal

    portal = Portal("ec", reg.client_secret, "https://ec.example/cb")
    code, verifier = browser.code_for(portal)
    id_token = redeem(client, portal, code, verifier).get_json()["id_token"]
    claims = verify(client, id_token, audience="ec")
    assert claims["aud"] == "ec"
    import jwt as pyjwt

    assert pyjwt.get_unverified_header(id_token)["alg"] == "ES256"


def test_code_is_single_use_and_replay_revokes_what_it_issued(browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    first = redeem(client, portal, code, verifier).get_json()
    second = redeem(client, portal, code, verifier)
    assert second.status_code == 400 and second.get_json()["error"] == "invalid_grant"
    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, headers=basic(portal)
    )
    assert refreshed.get_json()["error"] == "invalid_grant"
    introspected = client.post("/introspect", data={"token": first["access_token"]}, headers=basic(portal))
    assert introspected.get_json() == {"active": False}


def test_concurrent_redemptions_exactly_one_wins(app, browser, portal, account):
    code, verifier = browser.code_for(portal)
    results: list[int] = []
    barrier = threading.Barrier(12)

    def worker() -> None:
        c = app.test_client()
        barrier.wait()
        results.append(redeem(c, portal, code, verifier).status_code)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [400] * 11


def test_code_bound_to_redirect_uri_and_client(app, browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    wrong = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://portal.example.gov.cn/other",
            "code_verifier": verifier,
        },
        headers=basic(portal),
    )
    assert wrong.get_json()["error"] == "invalid_grant"
    other = create_client(name="Other", client_id="other", redirect_uris=[portal.redirect_uri])
    from tests.conftest import Portal

    code2, verifier2 = browser.code_for(portal)
    stolen = redeem(client, Portal("other", other.client_secret), code2, verifier2)
    assert stolen.get_json()["error"] == "invalid_grant"


def test_pkce_verifier_must_match(browser, client, portal, account):
    code, _ = browser.code_for(portal)
    wrong_verifier, _ = pkce_pair()
    response = redeem(client, portal, code, wrong_verifier)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


def test_pkce_challenge_without_verifier_is_refused(browser, client, portal, account):
    code, _ = browser.code_for(portal)
    response = client.post(
        "/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": portal.redirect_uri},
        headers=basic(portal),
    )
    assert response.get_json()["error"] == "invalid_request"


def test_confidential_client_may_skip_pkce(browser, client, portal, account):
    params = browser.follow_to_client(browser.authorize(portal), portal.redirect_uri)
    response = client.post(
        "/token",
        data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": portal.redirect_uri},
        headers=basic(portal),
    )
    assert response.status_code == 200


def test_public_client_requires_pkce_s256(browser, public_portal, account):
    response = browser.authorize(public_portal)
    from tests.conftest import query_of

    params = query_of(response.headers["Location"])
    assert params["error"] == "invalid_request"
    plain = browser.authorize(public_portal, code_challenge="a" * 43, code_challenge_method="plain")
    assert query_of(plain.headers["Location"])["error"] == "invalid_request"
    missing_method = browser.authorize(public_portal, code_challenge="a" * 43)
    assert query_of(missing_method.headers["Location"])["error"] == "invalid_request"


def test_public_client_redeems_with_client_id_only(browser, client, public_portal, account):
    code, verifier = browser.code_for(public_portal)
    response = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": public_portal.redirect_uri,
            "code_verifier": verifier,
            "client_id": public_portal.client_id,
        },
    )
    assert response.status_code == 200, response.text
    assert "refresh_token" in response.get_json()


def test_client_secret_post(browser, client, portal, account):
    code, verifier = browser.code_for(portal)
    from sso.clients import get_client

    get_client(portal.client_id).token_endpoint_auth_method = "client_secret_post"
    from sso.db import db

    db.session.commit()
    client.application.extensions["sso"].server.client_cache.invalidate()  # changed behind sso.clients
    response = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": portal.redirect_uri,
            "code_verifier": verifier,
            "client_id": portal.client_id,
            "client_secret": portal.secret,
        },
    )
    assert response.status_code == 200, response.text


def test_wrong_secret_is_invalid_client_401(browser, client, portal, account):
    from tests.conftest import Portal

    code, verifier = browser.code_for(portal)
    response = redeem(client, Portal(portal.client_id, "wrong"), code, verifier)
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_client_credentials_token(client, portal):
    response = client.post(
        "/token", data={"grant_type": "client_credentials", "scope": "openid"}, headers=basic(portal)
    )
    assert response.status_code == 200, response.text
    body = response.get_json()
    assert "refresh_token" not in body and "id_token" not in body
    claims = verify(client, body["access_token"], audience=portal.client_id, typ="at+jwt")
    assert claims["sub"] == portal.client_id and "gid" not in claims


def test_grant_type_not_registered_is_unauthorized_client(app, client):
    reg = create_client(
        name="Code only",
        client_id="code-only",
        redirect_uris=["https://c.example/cb"],
        grant_types=["authorization_code"],
    )
    from tests.conftest import Portal

    response = client.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(Portal("code-only", reg.client_secret))
    )
    assert response.get_json()["error"] == "unauthorized_client"
