"""Authorization endpoint: code issuance, state/nonce/iss, prompts, consent (OIDC Core §3.1.2)."""

from __future__ import annotations

import time

import jwt as pyjwt

from sso.consent import remembered_scopes
from tests.conftest import ISSUER, pkce_pair, query_of, redeem


def test_first_login_asks_for_credentials_then_consent_then_returns_code(browser, portal, account):
    verifier, challenge = pkce_pair()
    first = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    assert first.status_code == 302
    assert first.headers["Location"].startswith("/login?interaction=")
    after_login = browser.login(first.headers["Location"])
    assert after_login.headers["Location"].startswith("/authorize/resume?interaction=")
    resumed = browser.client.get(after_login.headers["Location"])
    assert resumed.headers["Location"].startswith("/consent?interaction=")
    done = browser.consent(resumed.headers["Location"])
    final = browser.client.get(done.headers["Location"])
    params = query_of(final.headers["Location"])
    assert final.headers["Location"].startswith(portal.redirect_uri + "?")
    assert set(params) == {"code", "state", "iss"}
    assert params["iss"] == ISSUER  # RFC 9207 §2


def test_state_and_nonce_round_trip_byte_exact(browser, client, portal, account):
    state = "ü ✓ /?&=+%20 状态"
    nonce = "nonce with spaces & 符号"
    code, verifier = browser.code_for(portal, state=state, nonce=nonce)
    token = redeem(client, portal, code, verifier).get_json()
    claims = pyjwt.decode(token["id_token"], options={"verify_signature": False})
    assert claims["nonce"] == nonce
    verifier2, challenge2 = pkce_pair()
    again = browser.authorize(portal, state=state, code_challenge=challenge2, code_challenge_method="S256")
    assert query_of(again.headers["Location"])["state"] == state


def test_remembered_consent_skips_the_consent_page(browser, portal, account):
    browser.code_for(portal)
    assert remembered_scopes(account.id, portal.client_id) == {"openid", "profile"}
    _, challenge = pkce_pair()
    second = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    assert second.headers["Location"].startswith(portal.redirect_uri)
    assert "code" in query_of(second.headers["Location"])


def test_denied_consent_returns_access_denied_with_state_and_iss(browser, portal, account):
    _, challenge = pkce_pair()
    first = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    resumed = browser.client.get(browser.login(first.headers["Location"]).headers["Location"])
    denied = browser.consent(resumed.headers["Location"], decision="deny")
    params = query_of(denied.headers["Location"])
    assert denied.headers["Location"].startswith(portal.redirect_uri)
    assert params["error"] == "access_denied"
    assert params["state"] == "st-123"
    assert params["iss"] == ISSUER


def test_wrong_password_and_unknown_user_get_the_same_answer(browser, portal, account):
    _, challenge = pkce_pair()
    location = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256").headers["Location"]
    wrong = browser.login(location, password="nope")
    unknown = browser.login(location, username="mallory", password="nope")
    assert wrong.status_code == unknown.status_code == 401
    marker = 'class="error" role="alert">'
    assert wrong.text.split(marker)[1].split("<")[0] == unknown.text.split(marker)[1].split("<")[0]


def test_prompt_none_without_session_returns_login_required(browser, portal):
    _, challenge = pkce_pair()
    response = browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    params = query_of(response.headers["Location"])
    assert response.headers["Location"].startswith(portal.redirect_uri)
    assert params["error"] == "login_required"
    assert params["state"] == "st-123" and params["iss"] == ISSUER


def test_prompt_none_without_consent_returns_consent_required(app, browser, portal, account):
    # A session exists (signed in through the home page), but no consent yet.
    page = browser.client.get("/login")
    from tests.conftest import csrf_from

    browser.client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "username": "alice", "password": "correct horse battery staple"},
    )
    _, challenge = pkce_pair()
    response = browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert query_of(response.headers["Location"])["error"] == "consent_required"


def test_prompt_none_with_session_and_consent_is_silent(browser, portal, account):
    browser.code_for(portal)
    _, challenge = pkce_pair()
    response = browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert "code" in query_of(response.headers["Location"])


def test_prompt_login_forces_a_fresh_login_once(browser, portal, account):
    browser.code_for(portal)
    _, challenge = pkce_pair()
    response = browser.authorize(portal, prompt="login", code_challenge=challenge, code_challenge_method="S256")
    assert response.headers["Location"].startswith("/login?interaction=")
    resumed = browser.client.get(browser.login(response.headers["Location"]).headers["Location"])
    # After the fresh login the same request completes instead of looping back.
    assert "code" in query_of(resumed.headers["Location"])


def test_max_age_exceeded_asks_for_login_and_auth_time_is_fresh(browser, client, portal, account, monkeypatch):
    browser.code_for(portal)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 120)
    verifier, challenge = pkce_pair()
    response = browser.authorize(portal, max_age="60", code_challenge=challenge, code_challenge_method="S256")
    assert response.headers["Location"].startswith("/login?interaction=")
    params = browser.follow_to_client(browser.login(response.headers["Location"]), portal.redirect_uri)
    claims = pyjwt.decode(
        redeem(client, portal, params["code"], verifier).get_json()["id_token"], options={"verify_signature": False}
    )
    assert claims["auth_time"] >= int(real_time()) + 119


def test_scope_outside_the_registration_is_dropped(browser, client, portal, account):
    code, verifier = browser.code_for(portal, scope="openid profile admin")
    assert redeem(client, portal, code, verifier).get_json()["scope"] == "openid profile"


def test_disabled_portal_gets_an_error_page_not_a_redirect(app, browser, portal, account):
    from sso.clients import disable_client

    disable_client(portal.client_id)
    _, challenge = pkce_pair()
    response = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert '<code id="error-code">invalid_client</code>' in response.text


def test_expired_interaction_shows_error_page(browser, portal, account):
    response = browser.client.get("/authorize/resume?interaction=does-not-exist")
    assert response.status_code == 400
    assert '<code id="error-code">invalid_request</code>' in response.text


def test_session_joins_the_portal_and_login_rotates_session_id(browser, portal, account, app):
    from sso.session import cookie_name

    browser.client.set_cookie(cookie_name(), "attacker-chosen-id", domain="localhost")
    browser.code_for(portal)
    cookie = browser.client.get_cookie(cookie_name())
    assert cookie is not None and cookie.value != "attacker-chosen-id"  # no fixation


def test_pages_are_not_cached_and_not_framed(client):
    page = client.get("/login")
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_login_page_has_stable_automation_names(client):
    html = client.get("/login").text
    assert 'id="login-form"' in html and 'name="username"' in html and 'name="password"' in html
    assert 'type="submit"' in html and 'name="csrf_token"' in html


def test_login_without_csrf_token_is_refused(client, account):
    response = client.post("/login", data={"username": "alice", "password": "correct horse battery staple"})
    assert response.status_code == 400
    assert "sso_session" not in response.headers.get("Set-Cookie", "")
