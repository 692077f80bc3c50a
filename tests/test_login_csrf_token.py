"""The login form's CSRF token is made when the page shows it, not when the form is built.

A sign-in that succeeds redirects: it never shows a token, so none is signed.
Every page that shows the form still carries a token Flask-WTF accepts, and the
CSRF secret is set in the session cookie exactly where it was before.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask_wtf import csrf as flask_wtf_csrf

from sso.web import forms
from sso.web.forms import LoginForm

from .conftest import PASSWORD, USERNAME, csrf_from


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every CSRF token asked for: of the login form's signer (sso.web.forms.generate_csrf,
    tests/test_login_csrf_signer.py) or of Flask-WTF (WTForms forms).  Overrides conftest's."""
    made: list[int] = []
    for module in (forms, flask_wtf_csrf):
        real = module.generate_csrf

        def counted(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            made.append(1)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, "generate_csrf", counted)
    return made


def test_a_successful_sign_in_signs_no_token(client, browser, portal, account, signed):
    location = browser.authorize(portal).headers["Location"]
    page = client.get(location)
    assert page.status_code == 200 and len(signed) == 1
    uid = location.split("interaction=")[1]
    answer = client.post(
        "/login",
        data={"csrf_token": csrf_from(page.text), "interaction": uid, "username": USERNAME, "password": PASSWORD},
    )
    assert answer.status_code == 302 and "/authorize/resume" in answer.headers["Location"]
    assert len(signed) == 1
    assert "sso_csrf=" not in answer.headers.get("Set-Cookie", "")


def test_a_failed_sign_in_shows_a_fresh_valid_token(client, account, signed):
    token = csrf_from(client.get("/login").text)
    failed = client.post("/login", data={"csrf_token": token, "username": USERNAME, "password": "wrong"})
    assert failed.status_code == 401 and len(signed) == 2
    again = client.post(
        "/login", data={"csrf_token": csrf_from(failed.text), "username": USERNAME, "password": PASSWORD}
    )
    assert again.status_code == 302


def test_the_expired_request_page_still_sets_the_csrf_secret(client):
    answer = client.get("/login?interaction=no-such-request")
    assert answer.status_code == 400
    assert "sso_csrf=" in answer.headers.get("Set-Cookie", "")


def test_the_token_read_is_the_one_flask_wtf_makes(app: Flask):
    with app.test_request_context("/login"):
        form = LoginForm(formdata=None)
        token = form.csrf_token.current_token
        assert token == flask_wtf_csrf.generate_csrf() == form.csrf_token._value() == forms.generate_csrf()
        flask_wtf_csrf.validate_csrf(token)
        assert f'value="{token}"' in str(form.csrf_token)
