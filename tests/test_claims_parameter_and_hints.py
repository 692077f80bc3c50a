"""The claims request parameter (OIDC Core §5.5) and login_hint (§3.1.2.1) end to end."""

from __future__ import annotations

import json

import jwt as pyjwt

from sso.accounts import register_citizen, verify_real_name
from sso.connectors.demo_data import DEMO_CITIZEN
from tests.conftest import ISSUER, csrf_from, pkce_pair, query_of, redeem

PASSWORD = "Zhang-San-2026"


def id_token_for(browser, client, portal, **params):
    code, verifier = browser.code_for(portal, **params)
    return pyjwt.decode(
        redeem(client, portal, code, verifier).get_json()["id_token"], options={"verify_signature": False}
    )


def test_claims_requested_in_the_id_token_within_consented_scopes(browser, client, portal, account):
    claims = json.dumps({"id_token": {"name": None, "phone_number": {"essential": True}}})
    token = id_token_for(browser, client, portal, claims=claims)
    assert token["name"] == "Alice"
    assert "phone_number" not in token  # no phone scope was consented: never released


def test_without_the_claims_parameter_the_id_token_stays_minimal(browser, client, portal, account):
    assert "name" not in id_token_for(browser, client, portal)


def test_malformed_claims_parameter_is_invalid_request_at_the_portal(browser, portal, account):
    _, challenge = pkce_pair()
    response = browser.authorize(portal, claims="{oops", code_challenge=challenge, code_challenge_method="S256")
    params = query_of(response.headers["Location"])
    assert response.headers["Location"].startswith(portal.redirect_uri)
    assert params["error"] == "invalid_request" and params["state"] == "st-123" and params["iss"] == ISSUER


def test_essential_acr_in_claims_asks_for_the_second_factor(app, browser, portal):
    register_citizen(verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), PASSWORD, DEMO_CITIZEN.phone)
    claims = json.dumps({"id_token": {"acr": {"essential": True, "values": ["urn:cn:sso:loa:3"]}}})
    _, challenge = pkce_pair()
    first = browser.authorize(portal, claims=claims, code_challenge=challenge, code_challenge_method="S256")
    resumed = browser.client.get(
        browser.login(first.headers["Location"], username=DEMO_CITIZEN.phone, password=PASSWORD).headers["Location"]
    )
    assert resumed.headers["Location"].startswith("/mfa/challenge?interaction=")


def test_login_hint_prefills_the_login_name(browser, portal):
    _, challenge = pkce_pair()
    first = browser.authorize(portal, login_hint="13800138000", code_challenge=challenge, code_challenge_method="S256")
    page = browser.client.get(first.headers["Location"])
    assert 'name="username" autocomplete="username" required maxlength="64" value="13800138000"' in page.text


def test_an_identity_number_is_never_echoed_into_the_page(browser, portal):
    _, challenge = pkce_pair()
    first = browser.authorize(
        portal, login_hint=DEMO_CITIZEN.id_number, code_challenge=challenge, code_challenge_method="S256"
    )
    page = browser.client.get(first.headers["Location"])
    assert DEMO_CITIZEN.id_number not in page.text
    failed = browser.client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "username": DEMO_CITIZEN.id_number, "password": "wrong-password"},
    )
    assert failed.status_code == 401 and DEMO_CITIZEN.id_number not in failed.text
