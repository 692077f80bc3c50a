"""GET /authorize/resume after a login: what it asks of the short-lived store, pinned.

The view reads the stored authorization request, then the endpoint resumes it: the
interaction is read from the store once (not once by each), the session once, the
session's write-back goes with the code in one call, and the finished interaction
is removed.  A resume that needs another page still finds its interaction updated.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from sso import session as browser_session
from sso.oidc.authorize import INTERACTION
from tests.conftest import Browser, Portal, pkce_pair, query_of


def _store_calls(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    store = app.extensions["sso"].store
    names = ("get", "put", "replace", "touch", "delete", "consume", "add", "replace_and_put", "touch_and_put")
    for name in names:
        method = getattr(store, name)

        def call(kind: str, *args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            calls.append((_name, kind))
            return _method(kind, *args, **kwargs)

        monkeypatch.setattr(store, name, call)
    return calls


def _login_to_resume(browser: Browser, portal: Portal, **params: str) -> str:
    verifier, challenge = pkce_pair()
    response = browser.authorize(portal, code_challenge=challenge, code_challenge_method="S256", **params)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    response = browser.login(response.headers["Location"])
    assert response.status_code == 302, response.text[:300]
    location: str = response.headers["Location"]
    assert location.startswith("/authorize/resume?interaction="), location
    return location


def test_a_resume_reads_its_interaction_once(
    app: Flask, browser: Browser, portal: Portal, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sso import consent

    consent.remember(account.id, portal.client_id, ["openid", "profile"])
    resume = _login_to_resume(browser, portal)
    calls = _store_calls(app, monkeypatch)
    response = browser.client.get(resume)
    monkeypatch.undo()
    assert response.status_code == 302 and "code" in query_of(response.headers["Location"])
    assert calls == [
        ("get", INTERACTION),  # once, for the view and the endpoint
        ("get", browser_session.KIND),
        ("replace_and_put", browser_session.KIND),  # the session with its code
        ("delete", INTERACTION),
    ]
    again = browser.client.get(resume)  # the interaction is gone: not served from a memory of it
    assert again.status_code == 400


def test_a_resume_that_needs_consent_keeps_its_interaction_up_to_date(
    app: Flask, browser: Browser, portal: Portal, account: Any
) -> None:
    resume = _login_to_resume(browser, portal)
    response = browser.client.get(resume)  # never consented: the consent page, same interaction
    assert response.status_code == 302 and response.headers["Location"].startswith("/consent")
    uid = query_of(response.headers["Location"])["interaction"]
    assert resume.endswith(uid)
    stored = app.extensions["sso"].store.get(INTERACTION, uid)
    assert stored["prompt"] == "consent" and stored["reason"] == "missing_scopes"
    result = browser.follow_to_client(response, portal.redirect_uri)
    assert "code" in result
