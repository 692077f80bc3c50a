"""Legal-person login: the enterprise registry, the explicit choice, agent authorisations, expiry."""

from __future__ import annotations

import re
import sqlite3
from datetime import date, datetime, timedelta

import pytest

from sso import legal
from sso.accounts import register_citizen, verify_real_name
from sso.clients import create_client
from sso.connectors.demo_data import (
    DEMO_AGENT,
    DEMO_CANCELLED_ENTERPRISE,
    DEMO_CITIZEN,
    DEMO_ENTERPRISE,
    DEMO_REVOKED_ENTERPRISE,
)
from sso.connectors.local import create_account
from sso.db import db
from sso.identifiers import mask_credit_code, resident_id_check_char
from sso.models import AgentAuthorisation, AuditEvent, Grant, utcnow
from tests.conftest import Portal, basic, csrf_from, interaction_from, pkce_pair, query_of, redeem
from tests.tokens_util import verify

ZHANG_PASSWORD = "Zhang-San-2026"
ZHAO_PASSWORD = "Zhao-Min-2026"
CODE = DEMO_ENTERPRISE.credit_code
SCOPE = "openid profile cn_legal_person"


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def zhang(app):
    """张三: legal representative of the active demo enterprise and of a revoked one."""
    return register_citizen(
        verify_real_name(DEMO_CITIZEN.name, DEMO_CITIZEN.id_number), ZHANG_PASSWORD, DEMO_CITIZEN.phone
    )


@pytest.fixture
def zhao(app):
    """赵敏: an ordinary citizen with no enterprise of her own."""
    return register_citizen(verify_real_name(DEMO_AGENT.name, DEMO_AGENT.id_number), ZHAO_PASSWORD, DEMO_AGENT.phone)


@pytest.fixture
def ent_portal(app):
    reg = create_client(
        name="企业服务 Enterprise portal",
        client_id="enterprise-portal",
        redirect_uris=["https://ent.example.gov.cn/cb"],
        scope=SCOPE,
        grant_types=["authorization_code", "refresh_token"],
    )
    return Portal("enterprise-portal", reg.client_secret, "https://ent.example.gov.cn/cb")


@pytest.fixture
def registry_db(tmp_path):
    """The mock enterprise registry, to change an enterprise's status mid-test."""
    path = tmp_path / "instance" / "registry.sqlite3"

    def set_status(credit_code, status):
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE enterprises SET status = ? WHERE credit_code = ?", (status, credit_code))

    return set_status


def csrf_of(client, page):
    """The page's CSRF token; a page without any form (nothing to act on) borrows the login page's."""
    if 'name="csrf_token"' in page.text:
        return csrf_from(page.text)
    return csrf_from(client.get("/login").text)


def cookie(client):
    found = client.get_cookie("sso_session")
    return found.value if found else None


def sign_in(client, username, password, **args):
    page = client.get("/login", query_string=args)
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_from(page.text), "username": username, "password": password}
    data.update({k: v for k, v in args.items() if k in ("interaction", "principal")})
    response = client.post("/login", data=data)
    assert response.status_code == 302, response.text
    return response


def choice_token(html, name, role="legal_representative"):
    """The opaque value of the 'act for' button of an enterprise and role on the select page."""
    for item in re.findall(r"<li class=\"choice[^>]*>.*?</li>", html, re.S):
        if name in item and f'data-role="{role}"' in item:
            found = re.search(r'name="choice" value="([0-9a-f]+)"', item)
            assert found, item
            return found.group(1)
    raise AssertionError(f"no choice for {name} as {role}")


def choose(client, location, name=DEMO_ENTERPRISE.name, role="legal_representative"):
    page = client.get(location)
    assert page.status_code == 200, page.text
    data = {"csrf_token": csrf_from(page.text), "action": "choose", "choice": choice_token(page.text, name, role)}
    if "interaction=" in location:
        data["interaction"] = interaction_from(location)
    return client.post("/enterprise/select", data=data)


def consent_and_code(browser, response, portal):
    return browser.follow_to_client(response, portal.redirect_uri)


def legal_tokens(browser, client, portal, username, password, name=DEMO_ENTERPRISE.name, role="legal_representative"):
    """Portal asks for cn_legal_person → login → select page → choose → consent → tokens."""
    verifier, challenge = pkce_pair()
    first = browser.authorize(portal, scope=SCOPE, code_challenge=challenge, code_challenge_method="S256")
    after_login = browser.login(first.headers["Location"], username=username, password=password)
    to_select = client.get(after_login.headers["Location"])
    location = to_select.headers["Location"]
    assert location.startswith("/enterprise/select?interaction="), location
    chosen = choose(client, location, name, role)
    assert chosen.status_code == 302, chosen.text
    params = consent_and_code(browser, chosen, portal)
    response = redeem(client, portal, params["code"], verifier)
    assert response.status_code == 200, response.text
    return response.get_json()


def refresh(client, portal, token):
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(portal))


def introspect(client, portal, token):
    return client.post("/introspect", data={"token": token}, headers=basic(portal)).get_json()


def userinfo(client, token):
    return client.get("/userinfo", headers={"Authorization": "Bearer " + token})


def grant_page(client, **fields):
    page = client.get("/enterprise/authorisations")
    assert page.status_code == 200, page.text
    data = {
        "csrf_token": csrf_of(client, page),
        "action": "grant",
        "agent_name": DEMO_AGENT.name,
        "agent_id_number": DEMO_AGENT.id_number,
        "roles": ["tax_filing", "social_security"],
        "valid_from": legal_today().isoformat(),
        "valid_until": (legal_today() + timedelta(days=180)).isoformat(),
    }
    option = re.search(r'<option value="([0-9a-f]+)">' + DEMO_ENTERPRISE.name, page.text)
    if option:
        data["enterprise"] = option.group(1)
    data.update(fields)
    return client.post("/enterprise/authorisations?lang=en", data={k: v for k, v in data.items() if v is not None})


def row_action(client, action, authorisation_id):
    page = client.get("/enterprise/authorisations")
    return client.post(
        "/enterprise/authorisations?lang=en",
        data={"csrf_token": csrf_of(client, page), "action": action, "authorisation": authorisation_id},
    )


legal_today = legal.today


def authorise_zhao(zhang, roles=("tax_filing", "social_security"), days=180):
    row = legal.grant_authorisation(
        zhang,
        CODE,
        DEMO_AGENT.id_number,
        DEMO_AGENT.name,
        list(roles),
        legal_today(),
        legal_today() + timedelta(days=days),
    )
    return row


# ---- what a person may act for -------------------------------------------------------------


def test_zhang_is_legal_rep_of_the_active_company_and_sees_the_revoked_one_as_unavailable(zhang, zhao):
    choices = {c.credit_code: c for c in legal.enterprises_for(zhang)}
    active, revoked = choices[CODE], choices[DEMO_REVOKED_ENTERPRISE.credit_code]
    assert active.role == revoked.role == "legal_representative"
    assert active.available and active.enterprise_name == "北京示范科技有限公司" and active.reason is None
    assert not revoked.available and revoked.reason == "enterprise_revoked"
    assert legal.enterprises_for(zhao) == []


def test_an_unverified_account_acts_for_nobody(app, account):
    assert legal.enterprises_for(account) == []
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(account, CODE)
    assert err.value.code == "not_verified"


def test_the_name_must_match_too(app, zhang):
    zhang.verified_attributes = {**zhang.verified_attributes, "name": "张叁"}
    db.session.commit()
    assert legal.enterprises_for(zhang) == []
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhang, CODE)
    assert err.value.code == "not_representative"


def test_select_page_masks_codes_and_greys_out_the_revoked_company(client, zhang):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    page = client.get("/enterprise/select?lang=en")
    assert page.status_code == 200
    assert "北京示范科技有限公司" in page.text and mask_credit_code(CODE) in page.text
    for code in (CODE, DEMO_REVOKED_ENTERPRISE.credit_code):
        assert code not in page.text
    assert DEMO_CITIZEN.id_number not in page.text
    revoked = re.search(r'<li class="choice unavailable"[^>]*>.*?</li>', page.text, re.S).group(0)
    assert DEMO_REVOKED_ENTERPRISE.name in revoked and "business licence is revoked" in revoked
    assert 'name="choice"' not in revoked
    assert page.headers["Cache-Control"] == "no-store"
    assert client.get("/static/enterprise.css").status_code == 200


def test_select_page_in_chinese(client, zhang):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    page = client.get("/enterprise/select")
    assert "选择" in page.text and "法定代表人" in page.text and "营业执照已被吊销" in page.text


def test_select_page_without_session_goes_to_the_legal_login(client):
    response = client.get("/enterprise/select")
    assert response.status_code == 302 and query_of(response.headers["Location"])["principal"] == "legal"


# ---- the legal-person login path -----------------------------------------------------------------


def test_login_page_has_the_enterprise_tab(client):
    page = client.get("/login")
    assert "法人登录" in page.text and 'id="legal-login-link"' in page.text
    legal_page = client.get("/login?principal=legal&lang=en")
    assert 'name="principal" value="legal"' in legal_page.text
    form = re.search(r'<form id="login-form".*?</form>', legal_page.text, re.S).group(0)
    for needle in ('name="username"', 'name="password"', 'type="submit"', 'name="principal" value="legal"'):
        assert needle in form
    assert "Sign in for an enterprise" in legal_page.text


def test_signing_in_for_an_enterprise_leads_to_the_selection(client, zhang):
    response = sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD, principal="legal")
    assert response.headers["Location"] == "/enterprise/select"
    chosen = choose(client, "/enterprise/select")
    assert chosen.status_code == 302 and chosen.headers["Location"] == "/enterprise/select"
    page = client.get("/enterprise/select?lang=en")
    current = re.search(r'<section class="acting".*?</section>', page.text, re.S).group(0)
    assert "北京示范科技有限公司" in current and "Legal representative" in current
    assert "Act as myself" in page.text and "Switch enterprise" in page.text


def test_legal_login_with_an_interaction_goes_to_the_selection_first(client, browser, ent_portal, zhang):
    _, challenge = pkce_pair()
    first = browser.authorize(
        ent_portal, scope="openid profile", code_challenge=challenge, code_challenge_method="S256"
    )
    uid = interaction_from(first.headers["Location"])
    response = sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD, interaction=uid, principal="legal")
    assert response.headers["Location"] == f"/enterprise/select?interaction={uid}"


# ---- the full flow for a legal representative --------------------------------------------------


def test_legal_representative_flow_claims_in_id_token_access_token_and_userinfo(
    app, browser, client, ent_portal, zhang
):
    verifier, challenge = pkce_pair()
    first = browser.authorize(ent_portal, scope=SCOPE, code_challenge=challenge, code_challenge_method="S256")
    after_login = browser.login(first.headers["Location"], username=DEMO_CITIZEN.id_number, password=ZHANG_PASSWORD)
    to_select = client.get(after_login.headers["Location"])
    location = to_select.headers["Location"]
    assert location.startswith("/enterprise/select?interaction=")

    before = cookie(client)
    chosen = choose(client, location)
    after = cookie(client)
    assert chosen.status_code == 302 and chosen.headers["Location"].startswith("/authorize/resume?interaction=")
    # The session handle rotated at the switch: the old cookie no longer signs anyone in.
    assert after and before and after != before and after.split(".")[0] != before.split(".")[0]
    client.set_cookie("sso_session", before)
    assert "Signed in as" not in client.get("/?lang=en").text
    client.set_cookie("sso_session", after)

    params = consent_and_code(browser, chosen, ent_portal)
    tokens = redeem(client, ent_portal, params["code"], verifier).get_json()
    expected = {"credit_code": CODE, "name": "北京示范科技有限公司", "role": "legal_representative"}
    id_token = verify(client, tokens["id_token"], audience=ent_portal.client_id)
    access = verify(client, tokens["access_token"], typ="at+jwt")
    assert id_token["cn_legal_person"] == expected
    assert access["cn_legal_person"] == expected
    info = userinfo(client, tokens["access_token"]).get_json()
    assert info["cn_legal_person"] == expected
    assert introspect(client, ent_portal, tokens["access_token"])["active"] is True
    assert refresh(client, ent_portal, tokens["refresh_token"]).status_code == 200

    events = db.session.execute(db.select(AuditEvent).filter_by(event="legal.enterprise_chosen")).scalars().all()
    assert len(events) == 1 and events[0].detail["credit_code"] == mask_credit_code(CODE)
    assert CODE not in str(events[0].detail)


def test_prompt_none_without_a_chosen_enterprise_is_interaction_required(browser, client, ent_portal, zhang):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    _, challenge = pkce_pair()
    response = browser.authorize(
        ent_portal, scope=SCOPE, prompt="none", code_challenge=challenge, code_challenge_method="S256"
    )
    assert response.status_code == 302
    params = query_of(response.headers["Location"])
    assert response.headers["Location"].startswith(ent_portal.redirect_uri)
    assert params["error"] == "interaction_required" and params["state"] == "st-123"


def test_act_as_myself_clears_the_choice_and_rotates(client, zhang):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD, principal="legal")
    choose(client, "/enterprise/select")
    page = client.get("/enterprise/select")
    before = cookie(client)
    response = client.post("/enterprise/select", data={"csrf_token": csrf_from(page.text), "action": "clear"})
    assert response.status_code == 302 and cookie(client) != before
    assert 'class="acting"' not in client.get("/enterprise/select").text
    assert db.session.execute(db.select(AuditEvent).filter_by(event="legal.acting_cleared")).scalar_one()


def test_cancel_on_the_select_page_returns_access_denied(browser, client, ent_portal, zhang):
    _, challenge = pkce_pair()
    first = browser.authorize(ent_portal, scope=SCOPE, code_challenge=challenge, code_challenge_method="S256")
    after_login = browser.login(first.headers["Location"], username=DEMO_CITIZEN.id_number, password=ZHANG_PASSWORD)
    location = client.get(after_login.headers["Location"]).headers["Location"]
    page = client.get(location)
    response = client.post(
        "/enterprise/select",
        data={"csrf_token": csrf_from(page.text), "interaction": interaction_from(location), "action": "cancel"},
    )
    assert response.status_code == 302
    assert query_of(response.headers["Location"])["error"] == "access_denied"


# ---- agent authorisations ----------------------------------------------------------------------------


def test_agent_lifecycle_through_the_pages(app, browser, client, ent_portal, zhang, zhao):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    response = grant_page(client)
    assert response.status_code == 302, response.text
    done = client.get(response.headers["Location"] + "&lang=en")
    assert "The agent must now confirm it." in done.text
    assert "赵敏" in done.text and "440305********2029" in done.text and DEMO_AGENT.id_number not in done.text
    row = db.session.execute(db.select(AgentAuthorisation)).scalar_one()
    assert row.status == "pending" and row.roles == ["tax_filing", "social_security"]

    # Pending: 赵敏 cannot act yet; she confirms on her own page.
    agent = app.test_client()
    sign_in(agent, DEMO_AGENT.id_number, ZHAO_PASSWORD)
    assert legal.enterprises_for(zhao) == []
    mine = agent.get("/enterprise/authorisations?lang=en")
    assert "Waiting for the agent" in mine.text and "Accept" in mine.text
    confirmed = row_action(agent, "confirm", row.id)
    assert confirmed.status_code == 302, confirmed.text
    db.session.expire_all()
    assert db.session.get(AgentAuthorisation, row.id).status == "active"
    [choice] = legal.enterprises_for(zhao)
    assert choice.role == "agent" and choice.available and choice.roles == ("tax_filing", "social_security")

    actions = {e.event for e in db.session.execute(db.select(AuditEvent)).scalars()}
    assert {"legal.authorisation_granted", "legal.authorisation_confirmed"} <= actions
    for event in db.session.execute(db.select(AuditEvent).filter(AuditEvent.event.like("legal.%"))).scalars():
        assert CODE not in str(event.detail) and DEMO_AGENT.id_number not in str(event.detail)


def test_agent_acts_with_roles_and_validity_in_the_claim(app, client, zhang, zhao, ent_portal):
    from tests.conftest import Browser

    row = authorise_zhao(zhang)
    legal.confirm(zhao, row.id)
    browser = Browser(client)
    tokens = legal_tokens(browser, client, ent_portal, DEMO_AGENT.id_number, ZHAO_PASSWORD, role="agent")
    claim = verify(client, tokens["id_token"], audience=ent_portal.client_id)["cn_legal_person"]
    assert claim["credit_code"] == CODE and claim["name"] == DEMO_ENTERPRISE.name and claim["role"] == "agent"
    auth = claim["authorisation"]
    assert auth["id"] == row.id and auth["roles"] == ["tax_filing", "social_security"]
    start = datetime.combine(legal_today(), datetime.min.time()) - timedelta(hours=8)
    assert auth["valid_from"] == start.isoformat() + "Z"
    assert auth["valid_until"] == (start + timedelta(days=181)).isoformat() + "Z"
    assert userinfo(client, tokens["access_token"]).get_json()["cn_legal_person"] == claim
    assert verify(client, tokens["access_token"], typ="at+jwt")["cn_legal_person"] == claim


@pytest.mark.parametrize("side", ["enterprise", "agent"])
def test_revocation_by_either_side_stops_refresh_and_introspection(app, client, zhang, zhao, ent_portal, side):
    from tests.conftest import Browser

    row = authorise_zhao(zhang)
    legal.confirm(zhao, row.id)
    tokens = legal_tokens(Browser(client), client, ent_portal, DEMO_AGENT.id_number, ZHAO_PASSWORD, role="agent")
    rotated = refresh(client, ent_portal, tokens["refresh_token"]).get_json()
    assert "refresh_token" in rotated

    # The revocation happens on the authorisations page of the side that ends it.
    other = app.test_client()
    if side == "enterprise":
        sign_in(other, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
        response = row_action(other, "revoke", row.id)
    else:
        response = row_action(client, "revoke", row.id)
    assert response.status_code == 302, response.text

    failed = refresh(client, ent_portal, rotated["refresh_token"])
    assert failed.status_code == 400 and failed.get_json()["error"] == "invalid_grant"
    assert introspect(client, ent_portal, rotated["access_token"]) == {"active": False}
    assert userinfo(client, rotated["access_token"]).status_code == 401
    db.session.expire_all()
    revoked = db.session.get(AgentAuthorisation, row.id)
    assert revoked.status == "revoked" and revoked.revoked_by == (zhang.id if side == "enterprise" else zhao.id)


def test_an_authorisation_past_valid_until_stops_at_once_including_refresh(app, client, zhang, zhao, ent_portal):
    from tests.conftest import Browser

    row = authorise_zhao(zhang)
    legal.confirm(zhao, row.id)
    tokens = legal_tokens(Browser(client), client, ent_portal, DEMO_AGENT.id_number, ZHAO_PASSWORD, role="agent")
    row = db.session.get(AgentAuthorisation, row.id)
    row.valid_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert introspect(client, ent_portal, tokens["access_token"]) == {"active": False}
    assert userinfo(client, tokens["access_token"]).status_code == 401
    failed = refresh(client, ent_portal, tokens["refresh_token"])
    assert failed.status_code == 400
    assert failed.get_json() == {
        "error": "invalid_grant",
        "error_description": "The authorisation to act for this enterprise has ended.",
    }
    grant = db.session.execute(db.select(Grant).filter_by(client_id=ent_portal.client_id)).scalar_one()
    assert grant.revoked_reason == "acting_ended"
    # The session's choice has ended too: the next authorization asks again (not a stale code).
    _, challenge = pkce_pair()
    again = Browser(client).authorize(ent_portal, scope=SCOPE, code_challenge=challenge, code_challenge_method="S256")
    assert again.headers["Location"].startswith("/enterprise/select?interaction=")


def test_the_clock_passing_valid_until_stops_it_too(app, client, zhang, zhao, ent_portal, monkeypatch):
    from tests.conftest import Browser

    row = authorise_zhao(zhang, days=10)
    legal.confirm(zhao, row.id)
    tokens = legal_tokens(Browser(client), client, ent_portal, DEMO_AGENT.id_number, ZHAO_PASSWORD, role="agent")
    end = db.session.get(AgentAuthorisation, row.id).valid_until
    monkeypatch.setattr(legal, "now", lambda: end - timedelta(seconds=1))
    assert legal.enterprises_for(zhao)[0].available
    monkeypatch.setattr(legal, "now", lambda: end)
    assert legal.enterprises_for(zhao) == []
    assert introspect(client, ent_portal, tokens["access_token"]) == {"active": False}
    assert refresh(client, ent_portal, tokens["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_a_licence_revoked_in_the_registry_stops_the_legal_rep_at_once(client, browser, zhang, ent_portal, registry_db):
    tokens = legal_tokens(browser, client, ent_portal, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    registry_db(CODE, "revoked")
    assert introspect(client, ent_portal, tokens["access_token"]) == {"active": False}
    assert refresh(client, ent_portal, tokens["refresh_token"]).get_json()["error"] == "invalid_grant"
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhang, CODE)
    assert err.value.code == "enterprise_revoked"


def test_a_registry_outage_does_not_burn_the_refresh_token(client, browser, zhang, ent_portal, monkeypatch):
    from sso.connectors.base import RegistryUnavailable
    from sso.connectors.enterprise import EnterpriseRegistry

    tokens = legal_tokens(browser, client, ent_portal, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)

    def down(self, code):
        raise RegistryUnavailable("down")

    monkeypatch.setattr(EnterpriseRegistry, "find_enterprise", down)
    response = refresh(client, ent_portal, tokens["refresh_token"])
    assert response.status_code == 503 and response.get_json()["error"] == "temporarily_unavailable"
    assert introspect(client, ent_portal, tokens["access_token"]) == {"active": False}  # fail closed
    monkeypatch.undo()
    assert refresh(client, ent_portal, tokens["refresh_token"]).status_code == 200


def test_revoked_or_cancelled_enterprise_cannot_be_chosen(app, zhang, zhao):
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhang, DEMO_REVOKED_ENTERPRISE.credit_code)
    assert err.value.code == "enterprise_revoked"
    # An authorisation for the cancelled company (granted before its deregistration).
    row = AgentAuthorisation(
        credit_code=DEMO_CANCELLED_ENTERPRISE.credit_code,
        enterprise_name=DEMO_CANCELLED_ENTERPRISE.name,
        grantor_account_id=zhang.id,
        agent_account_id=zhao.id,
        roles=["general"],
        valid_from=utcnow() - timedelta(days=1),
        valid_until=utcnow() + timedelta(days=30),
        status="active",
    )
    db.session.add(row)
    db.session.commit()
    [choice] = legal.enterprises_for(zhao)
    assert not choice.available and choice.reason == "enterprise_cancelled"
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhao, DEMO_CANCELLED_ENTERPRISE.credit_code, row.id)
    assert err.value.code == "enterprise_cancelled"
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhang, DEMO_CANCELLED_ENTERPRISE.credit_code)
    assert err.value.code == "not_representative"


def test_a_tampered_choice_is_refused_with_a_message(client, zhang):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    page = client.get("/enterprise/select")
    for choice in ("0" * 32, CODE, "", "x" * 5000):
        response = client.post(
            "/enterprise/select?lang=en",
            data={"csrf_token": csrf_from(page.text), "action": "choose", "choice": choice},
        )
        assert response.status_code == 400 and "not available any more" in response.text


def test_pending_declined_and_expired_authorisations_cannot_be_used(app, zhang, zhao):
    row = authorise_zhao(zhang)
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhao, CODE, row.id)
    assert err.value.code == "authorisation_pending"
    legal.decline(zhao, row.id)
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhao, CODE, row.id)
    assert err.value.code == "authorisation_declined"
    with pytest.raises(legal.LegalPersonError) as err:
        legal.confirm(zhao, row.id)
    assert err.value.code == "not_pending"
    with pytest.raises(legal.LegalPersonError) as err:
        legal.choose(zhang, CODE, row.id)  # someone else's authorisation
    assert err.value.code == "authorisation_unknown"


def test_a_successor_representative_ends_the_predecessors_authorisations(app, zhang, zhao, registry_db, tmp_path):
    row = authorise_zhao(zhang)
    # The registry now names someone else: 张三's pending grant can no longer be confirmed.
    with sqlite3.connect(tmp_path / "instance" / "registry.sqlite3") as conn:
        conn.execute("UPDATE enterprises SET legal_rep_name = '王六' WHERE credit_code = ?", (CODE,))
    with pytest.raises(legal.LegalPersonError) as err:
        legal.confirm(zhao, row.id)
    assert err.value.code == "grantor_replaced"
    assert legal.still_valid({"account_id": zhang.id, "credit_code": CODE, "role": "legal_representative"}) is False


# ---- bad input: each a clear message, never a 500 ------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("12345", "code_format"),
        ("91110101MA00DEM14I", "code_format"),  # I is not in the alphabet
        ("91990101MA00DEM14K", "code_region"),
        (CODE[:-1] + "X", "code_check_char"),
        (None, "code_format"),
    ],
)
def test_malformed_credit_codes(app, zhang, code, expected):
    for call in (
        lambda: legal.choose(zhang, code),
        lambda: legal.grant_authorisation(
            zhang,
            code,
            DEMO_AGENT.id_number,
            DEMO_AGENT.name,
            ["general"],
            date.today(),
            date.today() + timedelta(days=1),
        ),
    ):
        with pytest.raises(legal.LegalPersonError) as err:
            call()
        assert err.value.code == expected and err.value.message == legal.ERRORS[expected]


def test_lowercase_and_full_width_codes_are_accepted(app, zhang):
    assert legal.choose(zhang, CODE.lower())["credit_code"] == CODE
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in CODE)
    assert legal.choose(zhang, full_width)["credit_code"] == CODE


def _other_valid_id_number():
    first17 = "11010119800101001"
    return first17 + resident_id_check_char(first17)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"agent_id_number": "_other_"}, "No verified account matches this name and identity number."),
        ({"agent_name": "赵六"}, "No verified account matches this name and identity number."),
        ({"agent_id_number": "44030519850612202"}, "must have 18 characters"),
        ({"agent_id_number": DEMO_AGENT.id_number[:-1] + "8"}, "does not match: please check it"),
        ({"valid_until": "_yesterday_"}, "The end date must be after the start date."),
        ({"valid_until": "_today_", "valid_from": "_tomorrow_"}, "The end date must be after the start date."),
        ({"valid_from": "_yesterday_"}, "cannot start before today"),
        ({"valid_until": "_4years_"}, "at most three years"),
        ({"valid_until": "2026-13-45"}, "Enter both dates as year-month-day."),
        ({"valid_from": ""}, "Enter both dates as year-month-day."),
        ({"roles": None}, "Choose at least one matter"),
        ({"roles": ["tax_filing", "launch_rockets"]}, "not offered"),
        ({"enterprise": "0" * 32}, "Choose one of the enterprises you represent."),
        ({"agent_name": DEMO_CITIZEN.name, "agent_id_number": DEMO_CITIZEN.id_number}, "cannot authorise yourself"),
    ],
)
def test_grant_form_bad_input(client, zhang, zhao, fields, message):
    today = legal_today()
    substitutes = {
        "_other_": _other_valid_id_number(),
        "_yesterday_": (today - timedelta(days=1)).isoformat(),
        "_today_": today.isoformat(),
        "_tomorrow_": (today + timedelta(days=1)).isoformat(),
        "_4years_": (today + timedelta(days=4 * 365)).isoformat(),
    }
    fields = {k: substitutes.get(v, v) if isinstance(v, str) else v for k, v in fields.items()}
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    response = grant_page(client, **fields)
    assert response.status_code == 400, response.text
    error = re.search(r'<p class="error" role="alert" id="authorisation-error">(.*?)</p>', response.text, re.S)
    assert error and message in error.group(1).replace("&#39;", "'"), response.text
    # Never echoed in full: the typed number comes back masked only.
    typed = fields.get("agent_id_number") or DEMO_AGENT.id_number
    if len(typed) == 18:
        assert typed not in response.text
    assert db.session.execute(db.select(AgentAuthorisation)).first() is None


def test_a_second_authorisation_for_the_same_agent_is_refused(client, zhang, zhao):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    assert grant_page(client).status_code == 302
    again = grant_page(client)
    assert again.status_code == 400 and "already has a pending or active authorisation" in again.text


def test_a_non_representative_cannot_grant(client, zhang, zhao):
    sign_in(client, DEMO_AGENT.id_number, ZHAO_PASSWORD)
    page = client.get("/enterprise/authorisations?lang=en")
    assert 'id="grant-form"' not in page.text
    response = grant_page(client, enterprise="0" * 32)
    assert response.status_code == 403
    assert "Only the legal representative of an active enterprise can authorise agents." in response.text
    with pytest.raises(legal.LegalPersonError) as err:
        legal.grant_authorisation(
            zhao,
            CODE,
            DEMO_CITIZEN.id_number,
            DEMO_CITIZEN.name,
            ["general"],
            legal_today(),
            legal_today() + timedelta(days=5),
        )
    assert err.value.code == "not_representative"
    with pytest.raises(legal.LegalPersonError) as err:
        legal.grant_authorisation(
            zhang,
            DEMO_REVOKED_ENTERPRISE.credit_code,
            DEMO_AGENT.id_number,
            DEMO_AGENT.name,
            ["general"],
            legal_today(),
            legal_today() + timedelta(days=5),
        )
    assert err.value.code == "enterprise_revoked"


def test_an_agent_in_the_registry_as_deceased_is_not_eligible(app, zhang, zhao, tmp_path):
    with sqlite3.connect(tmp_path / "instance" / "registry.sqlite3") as conn:
        conn.execute("UPDATE people SET status = 'deceased' WHERE id_number = ?", (DEMO_AGENT.id_number,))
    with pytest.raises(legal.LegalPersonError) as err:
        authorise_zhao(zhang)
    assert err.value.code == "agent_not_eligible"


def test_only_the_parties_may_act_on_an_authorisation(app, client, zhang, zhao):
    row = authorise_zhao(zhang)
    stranger = create_account("stranger", "Stranger-pass-2026", "Stranger")
    for call in (legal.confirm, legal.decline, legal.revoke):
        with pytest.raises(legal.LegalPersonError) as err:
            call(stranger, row.id)
        assert err.value.code == "authorisation_unknown"
    with pytest.raises(legal.LegalPersonError) as err:
        legal.confirm(zhang, row.id)  # the grantor cannot confirm for the agent
    assert err.value.code == "authorisation_unknown"
    sign_in(client, "stranger", "Stranger-pass-2026")
    for action in ("confirm", "decline", "revoke"):
        response = row_action(client, action, row.id)
        assert response.status_code == 400 and "There is no such authorisation for you." in response.text
    legal.revoke(zhang, row.id)
    with pytest.raises(legal.LegalPersonError) as err:
        legal.revoke(zhao, row.id)
    assert err.value.code == "not_revocable"


def test_expired_interaction_on_the_select_page(client, zhang):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    response = client.get("/enterprise/select?interaction=no-such-interaction&lang=en")
    assert response.status_code == 400 and "This sign-in request has expired" in response.text
    page = client.get("/enterprise/select")
    posted = client.post(
        "/enterprise/select?lang=en",
        data={"csrf_token": csrf_from(page.text), "interaction": "gone", "action": "choose", "choice": "x"},
    )
    assert posted.status_code == 400 and "This sign-in request has expired" in posted.text


@pytest.mark.parametrize("path", ["/enterprise/select", "/enterprise/authorisations"])
def test_missing_csrf_is_a_clear_400(client, zhang, path):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    response = client.post(path + "?lang=en", data={"action": "choose", "choice": "x"})
    assert response.status_code == 400 and "CSRF" in response.text
    assert 'class="acting"' not in client.get("/enterprise/select").text


@pytest.mark.parametrize(
    "data",
    [
        {"action": "launch"},
        {"action": "revoke"},
        {"action": "confirm", "authorisation": "x" * 500},
        {"action": "grant", "valid_from": "\x00", "valid_until": "9" * 200, "agent_id_number": "\u0000" * 40},
        {"action": "grant", "roles": ["general"] * 50, "agent_name": "名" * 500},
    ],
)
def test_garbage_posts_are_never_a_500(client, zhang, data):
    sign_in(client, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    page = client.get("/enterprise/authorisations")
    response = client.post("/enterprise/authorisations", data={"csrf_token": csrf_from(page.text), **data})
    assert response.status_code in (400, 403), response.text
    selected = client.get("/enterprise/select")
    response = client.post("/enterprise/select", data={"csrf_token": csrf_from(selected.text), **data})
    assert response.status_code == 400


def test_the_authorisations_page_needs_a_session(client):
    response = client.get("/enterprise/authorisations")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_every_legal_error_has_a_translatable_message():
    from sso.web.enterprise import MESSAGES

    assert set(MESSAGES) == set(legal.ERRORS)
    for code, text in legal.ERRORS.items():
        assert MESSAGES[code]._args[0] == text  # the same English text


def test_no_full_numbers_or_codes_in_the_audit_trail(app, client, browser, zhang, zhao, ent_portal):
    row = authorise_zhao(zhang)
    legal.confirm(zhao, row.id)
    legal_tokens(browser, client, ent_portal, DEMO_CITIZEN.id_number, ZHANG_PASSWORD)
    legal.revoke(zhao, row.id)
    details = [str(e.detail) for e in db.session.execute(db.select(AuditEvent)).scalars()]
    joined = "\n".join(details)
    assert "legal.authorisation_revoked" in {e.event for e in db.session.execute(db.select(AuditEvent)).scalars()}
    for secret in (CODE, DEMO_CITIZEN.id_number, DEMO_AGENT.id_number):
        assert secret not in joined


def test_switching_enterprise_rotates_the_session_and_later_tokens_carry_the_new_one(
    app, client, browser, zhang, zhao, ent_portal, tmp_path
):
    from sso.identifiers import credit_code_check_char

    # 赵敏 represents a company of her own, and acts as agent for 张三's.
    first17 = "91440305MA5DEM4A0"
    her_code = first17 + credit_code_check_char(first17)
    with sqlite3.connect(tmp_path / "instance" / "registry.sqlite3") as conn:
        conn.execute(
            "INSERT INTO enterprises VALUES (?,?,?,?,?,?,?,?)",
            (
                her_code,
                "深圳示范咨询有限公司",
                "enterprise",
                "440305",
                DEMO_AGENT.name,
                DEMO_AGENT.id_number,
                "active",
                "2020-01-01",
            ),
        )
    legal.confirm(zhao, authorise_zhao(zhang).id)
    first = legal_tokens(browser, client, ent_portal, DEMO_AGENT.id_number, ZHAO_PASSWORD, name="深圳示范咨询有限公司")
    assert verify(client, first["id_token"])["cn_legal_person"]["credit_code"] == her_code

    page = client.get("/enterprise/select?lang=en")
    assert "Your current choice" in page.text and her_code not in page.text
    before = cookie(client)
    switched = choose(client, "/enterprise/select", DEMO_ENTERPRISE.name, role="agent")
    assert switched.status_code == 302 and cookie(client) != before
    assert db.session.execute(db.select(AuditEvent).filter_by(event="legal.enterprise_switched")).scalar_one()

    verifier, challenge = pkce_pair()
    response = browser.authorize(ent_portal, scope=SCOPE, code_challenge=challenge, code_challenge_method="S256")
    params = browser.follow_to_client(response, ent_portal.redirect_uri)  # consent remembered: no page
    second = redeem(client, ent_portal, params["code"], verifier).get_json()
    claim = verify(client, second["access_token"], typ="at+jwt")["cn_legal_person"]
    assert claim["credit_code"] == CODE and claim["role"] == "agent"
    # The earlier grant keeps the enterprise it was issued for.
    assert userinfo(client, first["access_token"]).get_json()["cn_legal_person"]["credit_code"] == her_code
