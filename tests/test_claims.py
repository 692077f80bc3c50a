"""Claims and privacy: pairwise sub, scope-limited claims, verified_claims, masked numbers."""

from __future__ import annotations

import pytest

from sso.accounts import register_citizen, verify_real_name
from sso.clients import create_client, get_client
from sso.connectors.demo_data import DEMO_CITIZEN
from sso.db import db
from tests.conftest import Portal, redeem

ALL = "openid profile phone address cn_identity"


@pytest.fixture
def citizen(app):
    return register_citizen(
        verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), "Zhang-San-2026", DEMO_CITIZEN.phone
    )


def portal_for(client_id, host, **extra):
    reg = create_client(name=client_id, client_id=client_id, redirect_uris=[f"https://{host}/cb"], scope=ALL, **extra)
    return Portal(client_id, reg.client_secret, f"https://{host}/cb")


def userinfo_of(browser, client, portal, scope=ALL):
    code, verifier = browser.code_for(portal, scope=scope)
    tokens = redeem(client, portal, code, verifier).get_json()
    info = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}).get_json()
    return info, tokens


def login_as(browser, portal, **params):
    """Sign in as 张三 by identity number on the first authorization."""
    from tests.conftest import pkce_pair

    verifier, challenge = pkce_pair()
    response = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256", **params)
    response = browser.login(response.headers["Location"], username=DEMO_CITIZEN.id_number, password="Zhang-San-2026")
    return browser.follow_to_client(response, portal.redirect_uri), verifier


def test_registry_verified_claims_for_every_scope(app, browser, client, citizen):
    portal = portal_for("tax", "tax.example.gov.cn")
    params, verifier = login_as(browser, portal, scope=ALL)
    tokens = redeem(client, portal, params["code"], verifier).get_json()
    info = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}).get_json()
    assert info["name"] == "张三" and info["gender"] == "male" and info["birthdate"] == "1990-03-07"
    assert info["phone_number"] == "+8613800138000" and info["phone_number_verified"] is True
    assert info["address"]["formatted"] == DEMO_CITIZEN.address and info["address"]["country"] == "CN"
    assert info["cn_id_number_masked"] == "110101********1233"
    assert "cn_id_number" not in info  # not approved for the full number
    verified = info["verified_claims"]
    assert verified["verification"]["trust_framework"] == "cn_population_registry"
    assert verified["verification"]["evidence"][0]["type"] == "electronic_record"
    assert verified["claims"]["name"] == "张三" and verified["claims"]["birthdate"] == "1990-03-07"
    assert "cn_id_number" not in verified["claims"]


def test_only_consented_scopes_are_released(app, browser, client, citizen):
    portal = portal_for("tax", "tax.example.gov.cn")
    params, verifier = login_as(browser, portal, scope="openid phone")
    tokens = redeem(client, portal, params["code"], verifier).get_json()
    info = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}).get_json()
    assert set(info) == {"sub", "phone_number", "phone_number_verified"}


def test_full_number_only_for_an_approved_portal(app, browser, client, citizen):
    portal = portal_for("social", "social.example.gov.cn")
    get_client("social").full_id_number_allowed = True
    db.session.commit()
    params, verifier = login_as(browser, portal, scope="openid cn_identity")
    tokens = redeem(client, portal, params["code"], verifier).get_json()
    info = client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}).get_json()
    assert info["cn_id_number"] == DEMO_CITIZEN.id_number
    assert info["verified_claims"]["claims"]["cn_id_number"] == DEMO_CITIZEN.id_number


def test_consent_page_says_full_number_when_approved(app, browser, citizen):
    portal = portal_for("social", "social.example.gov.cn")
    get_client("social").full_id_number_allowed = True
    db.session.commit()
    from tests.conftest import pkce_pair

    _, challenge = pkce_pair()
    first = browser.authorize(
        portal, scope="openid cn_identity", code_challenge=challenge, code_challenge_method="S256"
    )
    after = browser.login(first.headers["Location"], username=DEMO_CITIZEN.id_number, password="Zhang-San-2026")
    consent = browser.client.get(browser.client.get(after.headers["Location"]).headers["Location"] + "&lang=en")
    assert "Your full resident identity number" in consent.text


def test_pairwise_sub_differs_between_sectors_and_is_stable(app, browser, client, citizen):
    tax = portal_for("tax", "tax.example.gov.cn")
    social = portal_for("social", "social.example.gov.cn")
    first, _ = userinfo_of_citizen(browser, client, tax)
    again, _ = userinfo_of_citizen(browser, client, tax)
    other, _ = userinfo_of_citizen(browser, client, social)
    assert first["sub"] == again["sub"] != other["sub"]
    assert citizen.id not in (first["sub"], other["sub"])


def test_same_sector_identifier_shares_the_sub(app, browser, client, citizen):
    a = portal_for("a", "a.example.gov.cn", sector_identifier="https://sector.example.gov.cn/uris.json")
    b = portal_for("b", "b.example.gov.cn", sector_identifier="https://sector.example.gov.cn/uris.json")
    assert userinfo_of_citizen(browser, client, a)[0]["sub"] == userinfo_of_citizen(browser, client, b)[0]["sub"]


def test_public_subject_type(app, browser, client, citizen):
    portal = portal_for("pub", "pub.example.gov.cn", subject_type="public")
    assert userinfo_of_citizen(browser, client, portal)[0]["sub"] == citizen.id


def test_legal_person_claim_absent_without_acting_context(app, browser, client, citizen):
    portal = portal_for("tax", "tax.example.gov.cn")
    info, tokens = userinfo_of_citizen(browser, client, portal)
    assert "cn_legal_person" not in info


def test_no_full_number_in_the_database_or_audit(app, browser, client, citizen, tmp_path):
    portal = portal_for("tax", "tax.example.gov.cn")
    userinfo_of_citizen(browser, client, portal)
    raw = (tmp_path / "instance" / "sso.sqlite3").read_bytes()
    for suffix in ("-wal", ""):
        path = tmp_path / "instance" / f"sso.sqlite3{suffix}"
        if path.exists():
            raw += path.read_bytes()
    assert DEMO_CITIZEN.id_number.encode() not in raw
    assert b"110101********1233" in raw  # the masked form is what is kept in clear


def userinfo_of_citizen(browser, client, portal):
    if browser.client.get_cookie("sso_session") is None:
        params, verifier = login_as(browser, portal, scope=ALL)
        tokens = redeem(client, portal, params["code"], verifier).get_json()
        return client.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}).get_json(), tokens
    return userinfo_of(browser, client, portal)
