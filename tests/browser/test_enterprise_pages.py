"""Legal-person pages in a real browser: the enterprise sign-in tab, choosing, agent authorisations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sso import legal
from sso.accounts import register_citizen, verify_real_name
from sso.connectors.demo_data import DEMO_AGENT, DEMO_CITIZEN
from tests.browser.conftest import screenshot

PASSWORDS = {DEMO_CITIZEN.name: "Zhang-San-2026", DEMO_AGENT.name: "Zhao-Min-2026"}


def register(gateway: Any, person: Any) -> None:
    with gateway.app.app_context():
        register_citizen(verify_real_name(person.name, person.id_number), PASSWORDS[person.name], person.phone)


def sign_in(page: Any, gateway: Any, person: Any, *, legal: bool) -> None:
    page.goto(gateway.url + "/login?lang=en")
    if legal:
        page.click("#legal-login-link")
    page.fill("input[name=username]", person.phone)
    page.fill("input[name=password]", PASSWORDS[person.name])
    page.click("form#login-form button[type=submit]")


def test_enterprise_tab_then_choice_then_agent_authorisation(page, gateway):
    register(gateway, DEMO_CITIZEN)
    register(gateway, DEMO_AGENT)
    sign_in(page, gateway, DEMO_CITIZEN, legal=True)
    page.wait_for_url("**/enterprise/select**")
    body = page.content()
    assert "北京示范科技有限公司" in body and DEMO_CITIZEN.id_number not in body
    assert "91110101MA00DEM14K" not in body  # credit codes are shown masked
    screenshot(page, "enterprise-select")
    page.click("form#enterprise-form button[name=choice]")
    screenshot(page, "enterprise-chosen")

    page.goto(gateway.url + "/enterprise/authorisations?lang=en")
    page.fill("#agent_name", DEMO_AGENT.name)
    page.fill("#agent_id_number", DEMO_AGENT.id_number)
    page.check("input[name=roles][value=tax_filing]")
    # The gateway's day is China's (UTC+8), not this machine's: between 16:00 and
    # 24:00 UTC they differ, and a start "before today" is refused.
    with gateway.app.app_context():
        today = legal.today()
    assert page.input_value("#valid_from") == today.isoformat()  # the form starts today
    page.fill("#valid_until", (today + timedelta(days=90)).isoformat())
    page.click("form#grant-form button[type=submit]")
    page.wait_for_url("**done=granted**")
    body = page.content()
    assert DEMO_AGENT.id_number not in body
    assert "赵敏" in body
    screenshot(page, "enterprise-authorisations-granted")


def test_pages_fit_a_phone(phone_page, gateway):
    register(gateway, DEMO_CITIZEN)
    sign_in(phone_page, gateway, DEMO_CITIZEN, legal=True)
    phone_page.wait_for_url("**/enterprise/select**")
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(phone_page, "enterprise-select-phone")
