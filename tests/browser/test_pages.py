"""The gateway's own pages in a real browser: sign-in, registration, consent, account."""

from __future__ import annotations

import re
from typing import Any

from sso.connectors.demo_data import DEMO_CITIZEN
from tests.browser.conftest import screenshot

PASSWORD = "Zhang-San-2026"


def register_zhang_san(page: Any, gateway: Any) -> None:
    page.goto(gateway.url + "/register")
    screenshot(page, "register-1-real-name")
    page.fill("input[name=name]", DEMO_CITIZEN.name)
    page.fill("input[name=id_number]", DEMO_CITIZEN.id_number)
    page.click("button[type=submit]")
    page.fill("input[name=phone]", DEMO_CITIZEN.phone)
    screenshot(page, "register-2-phone")
    page.click("button[type=submit]")
    text = gateway.app.extensions["sso"].sms.messages(DEMO_CITIZEN.phone)[-1]["text"]
    page.fill("input[name=code]", re.search(r"(?<!\d)\d{6}(?!\d)", text).group())
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    screenshot(page, "register-3-password")
    page.click("button[type=submit]")


def test_login_page_is_chinese_by_default_and_switches_to_english(page, gateway):
    page.goto(gateway.url + "/login")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("form#login-form button[type=submit]").inner_text() == "登录"
    # Every input has a label (accessibility), found through the label text.
    assert page.get_by_label("身份证号、手机号或用户名").count() == 1 and page.get_by_label("密码").count() == 1
    screenshot(page, "login-zh")
    page.click("text=English")
    assert page.locator("form#login-form button[type=submit]").inner_text() == "Sign in"
    screenshot(page, "login-en")


def test_keyboard_only_sign_in(page, gateway):
    from sso.connectors.local import create_account

    with gateway.app.app_context():
        create_account("keyboard", "keyboard-password", "键盘用户")
    page.goto(gateway.url + "/login")
    page.focus("input[name=username]")
    page.keyboard.type("keyboard")
    page.keyboard.press("Tab")
    page.keyboard.type("keyboard-password")
    page.keyboard.press("Enter")
    page.wait_for_url(gateway.url + "/")
    assert "键盘用户" in page.content()


def test_registration_then_account_page(page, gateway):
    register_zhang_san(page, gateway)
    assert "110101********1233" in page.content()
    screenshot(page, "register-4-done")
    page.goto(gateway.url + "/account")
    body = page.content()
    assert "110101********1233" in body and DEMO_CITIZEN.id_number not in body
    screenshot(page, "account")


def test_phone_layout_has_no_horizontal_scroll(phone_page, gateway):
    phone_page.goto(gateway.url + "/login")
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    screenshot(phone_page, "login-phone")


def test_error_page_for_unknown_portal(page, gateway):
    page.goto(
        gateway.url + "/authorize?client_id=nobody&response_type=code&redirect_uri=https://evil.example/cb&scope=openid"
    )
    assert page.url.startswith(gateway.url)  # never sent to the unregistered URI
    assert page.locator("#error-code").inner_text() == "invalid_client"
    screenshot(page, "error-unknown-portal")


def test_stylesheet_is_served_and_applied(page, gateway):
    response = page.request.get(gateway.url + "/static/style.css")
    assert response.status == 200 and response.headers["content-type"].startswith("text/css")
    page.goto(gateway.url + "/login")
    # The header bar takes its colour from our own stylesheet (no CDN).
    colour = page.evaluate("getComputedStyle(document.querySelector('header.top')).backgroundColor")
    assert colour == "rgb(179, 38, 30)"


def test_admin_statistics_page(page, gateway):
    from sso.connectors.local import create_account
    from sso.db import db

    with gateway.app.app_context():
        admin = create_account("operator", "operator-password", "运维管理员")
        admin.is_admin = True
        db.session.commit()
    page.goto(gateway.url + "/login")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", "operator-password")
    page.click("form#login-form button[type=submit]")
    page.goto(gateway.url + "/admin/stats")
    assert page.locator("svg[role=img]").count() >= 1  # charts drawn server-side, no script
    assert page.locator("table").count() >= 1  # every chart has its data table
    screenshot(page, "admin-stats")
