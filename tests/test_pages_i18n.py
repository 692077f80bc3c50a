"""Pages in Chinese by default, English on request (lang switch or ui_locales)."""

from __future__ import annotations

from tests.conftest import pkce_pair


def test_chinese_by_default(client):
    page = client.get("/login")
    assert 'lang="zh-CN"' in page.text and "统一身份认证" in page.text and "用户名" in page.text


def test_lang_switch_is_remembered(client):
    english = client.get("/login?lang=en")
    assert "Username" in english.text and 'html lang="en"' in english.text
    assert "lang=en" in english.headers["Set-Cookie"]
    assert "Username" in client.get("/login").text


def test_ui_locales_reaches_the_login_and_consent_pages(browser, portal, account):
    _, challenge = pkce_pair()
    first = browser.authorize(portal, ui_locales="en-US zh-CN", code_challenge=challenge, code_challenge_method="S256")
    login_page = browser.client.get(first.headers["Location"])
    assert "Sign in" in login_page.text and "登录" not in login_page.text.split("<main")[1]
    consent_location = browser.client.get(browser.login(first.headers["Location"]).headers["Location"]).headers["Location"]
    consent_page = browser.client.get(consent_location)
    assert "is asking for access" in consent_page.text
    assert 'id="consent-form"' in consent_page.text
    assert 'name="decision" value="allow"' in consent_page.text and 'name="decision" value="deny"' in consent_page.text


def test_consent_page_names_the_portal_in_plain_words(browser, portal, account):
    _, challenge = pkce_pair()
    first = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    consent_location = browser.client.get(browser.login(first.headers["Location"]).headers["Location"]).headers["Location"]
    page = browser.client.get(consent_location).text
    assert "税务服务 Tax portal 请求访问您的信息" in page
    assert "您的姓名、性别和出生日期" in page
