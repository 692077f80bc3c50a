"""Refresh tokens: rotation on every use, reuse revokes the family (RFC 9700 §4.14)."""

from __future__ import annotations

import threading

from sso.crypto import token_hash
from sso.db import db
from sso.models import RefreshToken
from tests.conftest import basic, redeem


def refresh(client, portal, token, **extra):
    return client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": token, **extra}, headers=basic(portal)
    )


def tokens_for(browser, client, portal):
    code, verifier = browser.code_for(portal)
    return redeem(client, portal, code, verifier).get_json()


def test_refresh_rotates(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    second = refresh(client, portal, first["refresh_token"])
    assert second.status_code == 200, second.text
    body = second.get_json()
    assert body["refresh_token"] != first["refresh_token"]
    assert body["access_token"] != first["access_token"]
    assert body["scope"] == "openid profile"


def test_refresh_tokens_are_stored_by_hash_only(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    assert db.session.get(RefreshToken, token_hash(first["refresh_token"])) is not None
    assert db.session.get(RefreshToken, first["refresh_token"]) is None


def test_reuse_of_a_rotated_token_revokes_the_family(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    second = refresh(client, portal, first["refresh_token"]).get_json()
    reuse = refresh(client, portal, first["refresh_token"])
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    # The attacker's replay also kills the legitimate holder's newest tokens.
    assert refresh(client, portal, second["refresh_token"]).get_json()["error"] == "invalid_grant"
    introspected = client.post("/introspect", data={"token": second["access_token"]}, headers=basic(portal))
    assert introspected.get_json() == {"active": False}
    userinfo = client.get("/userinfo", headers={"Authorization": "Bearer " + second["access_token"]})
    assert userinfo.status_code == 401


def test_narrower_scope_on_refresh_keeps_the_grant_scope_for_the_next_token(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    narrow = refresh(client, portal, first["refresh_token"], scope="openid").get_json()
    assert narrow["scope"] == "openid"
    wide = refresh(client, portal, narrow["refresh_token"]).get_json()
    assert wide["scope"] == "openid profile"


def test_wider_scope_on_refresh_is_invalid_scope(browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    response = refresh(client, portal, first["refresh_token"], scope="openid profile admin")
    assert response.get_json()["error"] == "invalid_scope"


def test_refresh_token_is_bound_to_its_client(app, browser, client, portal, account):
    from sso.clients import create_client
    from tests.conftest import Portal

    first = tokens_for(browser, client, portal)
    other = create_client(name="Other", client_id="other", redirect_uris=["https://o.example/cb"])
    response = refresh(client, Portal("other", other.client_secret), first["refresh_token"])
    assert response.get_json()["error"] == "invalid_grant"
    # The rightful client can still use it: a stranger's attempt is not "reuse".
    assert refresh(client, portal, first["refresh_token"]).status_code == 200


def test_concurrent_refresh_exactly_one_wins(app, browser, client, portal, account):
    first = tokens_for(browser, client, portal)
    results: list[int] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        c = app.test_client()
        barrier.wait()
        results.append(refresh(c, portal, first["refresh_token"]).status_code)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) == 1
    assert results.count(400) == 9


def test_unknown_refresh_token_is_invalid_grant(client, portal):
    response = refresh(client, portal, "not-a-token")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
