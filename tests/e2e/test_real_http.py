"""The whole OpenID Connect journey against a real ``sso serve`` process, over real HTTP.

A portal's view only: endpoints come from discovery, the user's browser is a
``requests.Session`` filling the gateway's forms, token calls go through Authlib's
client, and every signature is checked with PyJWT against the published JWKS.
Each test runs once per backend (SQLite + memory store, PostgreSQL + Redis).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlencode, urljoin

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session

from .conftest import (
    DISPLAY_NAME,
    SCOPE,
    TIMEOUT,
    USERNAME,
    Browser,
    Gateway,
    Meta,
    Portal,
    new_pkce_request,
    portal_session,
    query_of,
    sign_in_for_code,
    token_request,
    userinfo,
    verify_access_token,
    verify_id_token,
    without_query,
)

# RFC 6749 state is any VSCHAR; reserved URL characters must survive the round trip.
TRICKY_STATE = "s t/?&=+%#;:@!$'()*,~" + secrets.token_urlsafe(8)
# RFC 7662 answer for an active access token: its claims (less the internal gid) + these.
INTROSPECTED = {"active", "token_type", "scope", "client_id", "sub", "aud", "iss", "jti"}
INTROSPECTED |= {"exp", "iat", "nbf", "auth_time", "acr", "amr", "sid"}
ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "end_session_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
)


def at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6 for RS256: left half of SHA-256, base64url without padding."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _introspect(oauth: OAuth2Session, meta: Meta, token: str) -> dict[str, Any]:
    url = meta["introspection_endpoint"]
    response = oauth.introspect_token(url, token=token, token_type_hint="access_token")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _assert_invalid_grant(response: requests.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    assert response.headers["Cache-Control"] == "no-store"


def _refresh(meta: Meta, portal: Portal, refresh_token: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return token_request(meta, portal, data)


def _assert_token_rejected(meta: Meta, access_token: str) -> None:
    response = userinfo(meta, access_token)
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert response.json()["error"] == "invalid_token"


# ---- discovery -----------------------------------------------------------------------


def test_discovery_names_only_the_configured_issuer(gateway: Gateway, metadata: Meta) -> None:
    assert metadata["issuer"] == gateway.issuer
    for name in ENDPOINTS:
        assert metadata[name].startswith(gateway.issuer + "/"), (name, metadata[name])
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert "RS256" in metadata["id_token_signing_alg_values_supported"]


@pytest.mark.parametrize(
    "spoof",
    [
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example"},
        {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    ],
    ids=["host", "x-forwarded-host", "both"],
)
def test_spoofed_host_is_ignored(gateway: Gateway, metadata: Meta, spoof: dict[str, str]) -> None:
    honest = requests.get(gateway.discovery_url, timeout=TIMEOUT)
    spoofed = requests.get(gateway.discovery_url, headers=spoof, timeout=TIMEOUT)
    assert spoofed.status_code == 200
    assert spoofed.json() == honest.json() == metadata
    assert b"evil" not in spoofed.content

    portal = gateway.register("Spoof target")
    url, _, _, _ = new_pkce_request(portal_session(metadata, portal), metadata)
    response = requests.get(url, headers=spoof, allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert "evil" not in location
    login_url = urljoin(gateway.issuer + "/authorize", location)
    assert login_url.startswith(gateway.issuer + "/login?interaction="), location
    page = requests.get(login_url, headers=spoof, allow_redirects=False, timeout=TIMEOUT)
    assert page.status_code == 200
    assert "evil" not in page.text


# ---- the authorization code journey ------------------------------------------------


@pytest.mark.parametrize("kind", ["confidential", "public"])
def test_authorization_code_journey(gateway: Gateway, metadata: Meta, kind: str) -> None:
    meta = metadata
    public = kind == "public"
    portal = gateway.register(f"{kind} portal 门户", public=public)
    if public:
        assert portal.auth_method == "none" and portal.client_secret is None
        _public_client_needs_pkce(meta, portal)
    else:
        assert portal.auth_method == "client_secret_basic" and portal.client_secret
    oauth = portal_session(meta, portal)
    browser = Browser(meta["issuer"])
    started = int(time.time())

    # Browser: authorize → login → consent → back to the portal with code, state and iss.
    url, state, verifier, nonce = new_pkce_request(oauth, meta, state=TRICKY_STATE)
    callback = browser.authorize(url, portal.redirect_uri)
    assert browser.submitted == ["login-form", "consent-form"]
    params = query_of(callback)
    assert set(params) == {"code", "state", "iss"}, params
    assert params["state"] == TRICKY_STATE  # byte-exact
    assert params["iss"] == meta["issuer"]  # RFC 9207

    # Token exchange with PKCE; Authlib checks the state again.
    token = oauth.fetch_token(
        meta["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier
    )
    assert token["token_type"] == "Bearer" and token["scope"] == SCOPE
    assert {"access_token", "refresh_token", "id_token", "expires_in"} <= set(token)
    access, refresh, id_token = token["access_token"], token["refresh_token"], token["id_token"]

    id_claims = verify_id_token(meta, id_token, client_id=portal.client_id)
    assert id_claims["nonce"] == nonce
    assert id_claims["at_hash"] == at_hash(access)
    assert isinstance(id_claims["sid"], str) and id_claims["sid"]
    assert started <= id_claims["auth_time"] <= id_claims["iat"] <= int(time.time())
    assert id_claims["exp"] > id_claims["iat"]
    at_claims = verify_access_token(meta, access, client_id=portal.client_id)
    assert at_claims["scope"] == SCOPE
    assert at_claims["sub"] == id_claims["sub"]
    assert at_claims["exp"] > at_claims["iat"] and at_claims["jti"]

    # UserInfo: Bearer header (through Authlib) and form body give the same subject.
    expected_info = {"sub": id_claims["sub"], "name": DISPLAY_NAME, "preferred_username": USERNAME}
    via_header = oauth.get(meta["userinfo_endpoint"])
    assert via_header.status_code == 200 and via_header.json() == expected_info
    form = {"access_token": access}
    via_form = requests.post(meta["userinfo_endpoint"], data=form, timeout=TIMEOUT)
    assert via_form.status_code == 200 and via_form.json() == expected_info

    # Introspection (RFC 7662) of an active token: exactly the documented fields.
    if not public:
        body = _introspect(oauth, meta, access)
        assert set(body) == INTROSPECTED, body
        claims = {k: v for k, v in at_claims.items() if k != "gid"}
        assert body == {**claims, "active": True, "token_type": "Bearer"}
        assert (body["auth_time"], body["sid"]) == (id_claims["auth_time"], id_claims["sid"])

    # Revocation (RFC 7009): unknown tokens are fine; a revoked access token is dead.
    for revoke in (secrets.token_urlsafe(32), access):
        revoked = oauth.revoke_token(
            meta["revocation_endpoint"], token=revoke, token_type_hint="access_token"
        )
        assert revoked.status_code == 200, revoked.text
    if not public:
        assert _introspect(oauth, meta, access) == {"active": False}
    _assert_token_rejected(meta, access)

    # Refresh with rotation; reuse of the old token revokes the whole family.
    refreshed = oauth.refresh_token(meta["token_endpoint"], refresh_token=refresh)
    new_access, new_refresh = refreshed["access_token"], refreshed["refresh_token"]
    assert new_refresh != refresh and new_access != access
    new_claims = verify_access_token(meta, new_access, client_id=portal.client_id)
    assert new_claims["sub"] == id_claims["sub"] and new_claims["scope"] == SCOPE
    assert userinfo(meta, new_access).status_code == 200
    if not public:
        assert _introspect(oauth, meta, new_access)["active"] is True
    _assert_invalid_grant(_refresh(meta, portal, refresh))  # the rotated-out token
    _assert_invalid_grant(_refresh(meta, portal, new_refresh))  # its family is revoked
    if not public:
        assert _introspect(oauth, meta, new_access) == {"active": False}
    _assert_token_rejected(meta, new_access)

    # Still signed in at the gateway: prompt=none gives a code silently.
    url, state, _, _ = new_pkce_request(oauth, meta, prompt="none")
    silent = query_of(browser.authorize(url, portal.redirect_uri))
    assert "code" in silent and silent["state"] == state
    assert browser.submitted == ["login-form", "consent-form"]

    # RP-initiated logout back to the registered URI with the state; then no session.
    logout_state = "bye " + secrets.token_urlsafe(8)
    hint = {
        "id_token_hint": id_token,
        "post_logout_redirect_uri": portal.post_logout_redirect_uri,
        "state": logout_state,
    }
    response = browser.get(meta["end_session_endpoint"] + "?" + urlencode(hint))
    assert response.status_code == 302, response.text[:1000]
    location = response.headers["Location"]
    assert without_query(location) == portal.post_logout_redirect_uri
    assert query_of(location) == {"state": logout_state}

    url, state, _, _ = new_pkce_request(oauth, meta, prompt="none")
    response = browser.get(url)
    assert response.status_code == 302, response.text[:1000]
    error = query_of(response.headers["Location"])
    assert without_query(response.headers["Location"]) == portal.redirect_uri
    assert error["error"] == "login_required"
    assert error["state"] == state and error["iss"] == meta["issuer"]


def _public_client_needs_pkce(meta: Meta, portal: Portal) -> None:
    """A public client's request without a code challenge goes back as invalid_request."""
    oauth = OAuth2Session(client_id=portal.client_id, scope=SCOPE, redirect_uri=portal.redirect_uri)
    url, state = oauth.create_authorization_url(meta["authorization_endpoint"], nonce="n")
    assert "code_challenge" not in url
    response = requests.get(url, allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302, response.text[:1000]
    assert without_query(response.headers["Location"]) == portal.redirect_uri
    error = query_of(response.headers["Location"])
    assert error["error"] == "invalid_request"
    assert error["state"] == state and error["iss"] == meta["issuer"]


# ---- client credentials ---------------------------------------------------------------


def test_client_credentials_with_client_secret_post(gateway: Gateway, metadata: Meta) -> None:
    portal = gateway.register("Batch job", "client_credentials", auth_method="client_secret_post")
    assert portal.auth_method == "client_secret_post"
    oauth = OAuth2Session(
        client_id=portal.client_id,
        client_secret=portal.client_secret,
        token_endpoint_auth_method="client_secret_post",
        default_timeout=TIMEOUT,
    )
    token = oauth.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert "refresh_token" not in token and "id_token" not in token
    claims = verify_access_token(metadata, token["access_token"], client_id=portal.client_id)
    assert claims["sub"] == portal.client_id  # RFC 9068 §2.2: no resource owner

    # The secret in a Basic header is not how this portal authenticates.
    basic = requests.post(
        metadata["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(portal.client_id, str(portal.client_secret)),
        timeout=TIMEOUT,
    )
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client"


# ---- concurrency -------------------------------------------------------------------------

RACERS = 20


def race(n: int, call: Callable[[], requests.Response]) -> list[requests.Response]:
    """Run ``call`` in ``n`` threads released at the same instant."""
    barrier = threading.Barrier(n)

    def run() -> requests.Response:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(run) for _ in range(n)]
        return [f.result() for f in futures]


def _code_exchange(portal: Portal, code: str, verifier: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": portal.redirect_uri,
        "code_verifier": verifier,
    }


def _outcome(response: requests.Response) -> tuple[int, str]:
    try:
        return response.status_code, str(response.json().get("error", ""))
    except ValueError:  # not JSON, e.g. a 500 page
        return response.status_code, response.text[:200]


def _assert_exactly_one_winner(responses: list[requests.Response]) -> None:
    outcomes = sorted(_outcome(r) for r in responses)
    assert outcomes == [(200, "")] + [(400, "invalid_grant")] * (RACERS - 1), outcomes


def test_concurrent_code_redemption_issues_once(gateway: Gateway, metadata: Meta) -> None:
    portal = gateway.register("Race: code")
    data = _code_exchange(portal, *sign_in_for_code(metadata, portal))
    _assert_exactly_one_winner(race(RACERS, lambda: token_request(metadata, portal, data)))


def test_concurrent_refresh_rotates_once(gateway: Gateway, metadata: Meta) -> None:
    portal = gateway.register("Race: refresh")
    data = _code_exchange(portal, *sign_in_for_code(metadata, portal))
    first = token_request(metadata, portal, data)
    assert first.status_code == 200, first.text
    refresh = first.json()["refresh_token"]
    _assert_exactly_one_winner(race(RACERS, lambda: _refresh(metadata, portal, refresh)))
