"""Pages in Chinese by default, English on request (lang switch or ui_locales)."""

from __future__ import annotations

from tests.conftest import pkce_pair


def test_chinese_by_default(client):
    page = client.get("/login")
    assert 'lang="zh-CN"' in page.text and "统一身份认证" in page.text and "身份证号、手机号或用户名" in page.text


def test_lang_switch_is_remembered(client):
    english = client.get("/login?lang=en")
    assert "Identity number, mobile phone or username" in english.text and 'html lang="en"' in english.text
    assert "lang=en" in english.headers["Set-Cookie"]
    assert "Identity number, mobile phone or username" in client.get("/login").text


def test_ui_locales_reaches_the_login_and_consent_pages(browser, portal, account):
    _, challenge = pkce_pair()
    first = browser.authorize(portal, ui_locales="en-US zh-CN", code_challenge=challenge, code_challenge_method="S256")
    login_page = browser.client.get(first.headers["Location"])
    assert "Sign in" in login_page.text and "登录" not in login_page.text.split("<main")[1]
    consent_location = browser.client.get(browser.login(first.headers["Location"]).headers["Location"]).headers[
        "Location"
    ]
    consent_page = browser.client.get(consent_location)
    assert "is asking for access" in consent_page.text
    assert 'id="consent-form"' in consent_page.text
    assert 'name="decision" value="allow"' in consent_page.text and 'name="decision" value="deny"' in consent_page.text


def test_consent_page_names_the_portal_in_plain_words(browser, portal, account):
    _, challenge = pkce_pair()
    first = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    consent_location = browser.client.get(browser.login(first.headers["Location"]).headers["Location"]).headers[
        "Location"
    ]
    page = browser.client.get(consent_location).text
    assert "税务服务 Tax portal 请求访问您的信息" in page
    assert "您的姓名、性别和出生日期" in page


def test_every_page_string_has_a_chinese_translation():
    """Extract the strings the code and templates use; each must be translated (not fuzzy) and compiled."""
    from pathlib import Path

    from babel.messages.extract import extract_from_dir
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    root = Path(__file__).resolve().parents[1]
    method_map = [("sso/**.py", "python"), ("sso/web/templates/**.html", "jinja2")]
    keywords = {"_": None, "_l": None, "gettext": None, "lazy_gettext": None}
    used = {msg[2] for msg in extract_from_dir(str(root), method_map=method_map, keywords=keywords) if msg[2]}
    folder = root / "sso/web/translations/zh_Hans_CN/LC_MESSAGES"
    catalog = read_po((folder / "messages.po").open("rb"))
    compiled = read_mo((folder / "messages.mo").open("rb"))
    untranslated = sorted(
        m for m in used if isinstance(m, str) and (m not in catalog or not catalog[m].string or catalog[m].fuzzy)
    )
    assert untranslated == []
    stale = sorted(
        m for m in used if isinstance(m, str) and (m not in compiled or compiled[m].string != catalog[m].string)
    )
    assert stale == [], "run: pybabel compile -d sso/web/translations"
