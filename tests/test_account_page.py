"""The account page: profile, consents (withdrawing one revokes its tokens), sessions, sign-ins."""

from __future__ import annotations

import re

from sso.accounts import register_citizen, verify_real_name
from sso.connectors.demo_data import DEMO_CITIZEN
from sso.db import db
from sso.models import Consent
from tests.conftest import basic, csrf_from, pkce_pair, query_of, redeem

PASSWORD = "Zhang-San-2026"


def citizen_tokens(app, browser, client, portal):
    register_citizen(verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), PASSWORD, DEMO_CITIZEN.phone)
    verifier, challenge = pkce_pair()
    first = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    response = browser.login(first.headers["Location"], username=DEMO_CITIZEN.phone, password=PASSWORD)
    params = browser.follow_to_client(response, portal.redirect_uri)
    return redeem(client, portal, params["code"], verifier).get_json()


def test_signed_out_goes_to_login(client):
    response = client.get("/account")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_profile_shows_only_masked_numbers(app, browser, client, portal):
    citizen_tokens(app, browser, client, portal)
    page = client.get("/account?lang=en")
    assert page.status_code == 200
    assert "110101********1233" in page.text and DEMO_CITIZEN.id_number not in page.text
    assert "138****8000" in page.text and DEMO_CITIZEN.phone not in page.text
    assert "Verified against the population registry" in page.text
    assert "urn:cn:sso:loa:2" in page.text


def test_withdrawing_consent_revokes_that_portals_refresh_tokens(app, browser, client, portal):
    tokens = citizen_tokens(app, browser, client, portal)
    page = client.get("/account")
    assert f'data-client="{portal.client_id}"' in page.text
    response = client.post(
        "/account/consents/revoke", data={"csrf_token": csrf_from(page.text), "client_id": portal.client_id}
    )
    assert response.status_code == 302
    assert db.session.execute(db.select(Consent)).scalars().all() == []
    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, headers=basic(portal)
    )
    assert refreshed.get_json()["error"] == "invalid_grant"
    # The next authorization asks for consent again.
    _, challenge = pkce_pair()
    again = browser.authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert query_of(again.headers["Location"])["error"] == "consent_required"


def test_revoking_another_session_keeps_this_one(app, browser, client, portal):
    citizen_tokens(app, browser, client, portal)
    other = app.test_client()
    page = other.get("/login")
    other.post(
        "/login", data={"csrf_token": csrf_from(page.text), "username": DEMO_CITIZEN.phone, "password": PASSWORD}
    )
    mine = client.get("/account?lang=en").text
    rows = dict(re.findall(r'data-sid="([^"]+)">\s*<strong>([^<]+)</strong>', mine))
    assert sorted(rows.values()) == ["Another browser", "This browser"]
    other_sid = next(sid for sid, label in rows.items() if label == "Another browser")
    response = client.post("/account/sessions/revoke", data={"csrf_token": csrf_from(mine), "sid": other_sid})
    assert response.status_code == 302
    assert other.get("/account").status_code == 302  # the other browser is signed out
    assert client.get("/account").status_code == 200


def test_recent_sign_ins_and_csrf(app, browser, client, portal):
    citizen_tokens(app, browser, client, portal)
    page = client.get("/account?lang=en")
    assert "Recent sign-ins" in page.text and "Succeeded" in page.text
    refused = client.post("/account/consents/revoke", data={"client_id": portal.client_id})
    assert refused.status_code == 400
    assert db.session.execute(db.select(Consent)).scalars().all() != []
