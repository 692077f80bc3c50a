"""The SSO hop and the resumed request served without Flask's request cycle (sso.oidc.hop).

A signed-in browser's ``GET /authorize`` for a portal it may use without a page must
skip Flask (no ``request_started``) and answer what the Flask view answers: a 302 to
the portal with a code that redeems, the same headers, the access line, the audit
row with the client's address.  Every other outcome is Flask's own answer, the view
run once, and a failure inside the lane is Flask's error page, the hop not retried.
Both on the embedded backends and on PostgreSQL + Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.test import Client as WsgiClient

from sso import consent
from sso.db import db
from sso.models import AuditEvent
from sso.oidc.hop import HopLane
from sso.storage import StoreUnavailable
from tests.backends import pg_url, redis_url  # noqa: F401  (fixtures)
from tests.conftest import (
    BOTH_BACKENDS,
    Browser,
    Portal,
    flask_requests,
    make_portal,
    on_both_backends,
    pkce_pair,
    query_of,
    redeem,
    running,
)

SCOPES = ["openid", "profile"]
ADDRESS = "203.0.113.7"
# Headers whose values differ on every call.
FRESH = {"Location", "X-Request-Id"}


@pytest.fixture(params=BOTH_BACKENDS)
def gateway(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Flask]:
    with running(on_both_backends(request, tmp_path)) as app:
        yield app


@pytest.fixture
def signed_in(gateway: Flask) -> tuple[Browser, dict[str, Portal]]:
    """Signed in at "tax"; "social" and "health" pre-consented (a hop there is a code at once)."""
    from sso.connectors.local import create_account

    portals = {name: make_portal(name) for name in ("tax", "social", "health", "fresh")}
    account = create_account("alice", "correct horse battery staple", "Alice")
    for name in ("social", "health"):
        consent.remember(account.id, name, SCOPES)
    db.session.commit()
    client = gateway.test_client()
    client.environ_base["REMOTE_ADDR"] = ADDRESS
    browser = Browser(client)
    browser.code_for(portals["tax"])  # login + consent at the first portal
    return browser, portals


@pytest.fixture
def hits(gateway: Flask) -> Iterator[list[str]]:
    with flask_requests(gateway) as seen:
        yield seen


def _hop_lane(app: Flask) -> HopLane:
    lane = app.wsgi_app.wsgi_app.wsgi_app  # type: ignore[attr-defined]  # StaticDocuments -> ProtocolLane -> HopLane
    assert isinstance(lane, HopLane)
    return lane


def _through_flask(app: Flask, browser: Browser) -> Browser:
    """The same browser (its cookies), talking to the WSGI app behind the hop's lane."""
    client = WsgiClient(_hop_lane(app).wsgi_app, use_cookies=True)
    client._cookies = browser.client._cookies  # type: ignore[attr-defined]
    return Browser(client)  # type: ignore[arg-type]


def _shape(response: Any) -> tuple[str, list[tuple[str, str]], bytes, list[str]]:
    """What must be equal between the lane's answer and Flask's."""
    headers = [(k, "" if k in FRESH else v) for k, v in response.headers.items()]
    location = response.headers.get("Location", "")
    return response.status, headers, response.data, sorted(query_of(location)) if "?" in location else [location]


def _signed_in_at(client_id: str) -> list[AuditEvent]:
    db.session.rollback()
    query = db.select(AuditEvent).filter_by(event="authorize.code_redeemed", client_id=client_id)
    return list(db.session.execute(query).scalars())


def test_a_hop_skips_flask_and_answers_like_the_view(
    gateway: Flask, signed_in: Any, hits: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    browser, portals = signed_in
    caplog.set_level(logging.INFO, logger="sso.access")
    verifier, challenge = pkce_pair()
    fast = browser.authorize(portals["social"], code_challenge=challenge, code_challenge_method="S256")
    assert hits == []  # answered before Flask
    slow = _through_flask(gateway, browser).authorize(
        portals["health"], code_challenge=challenge, code_challenge_method="S256"
    )
    assert hits == ["/authorize"]
    assert _shape(fast) == _shape(slow)
    # And it is the right answer: the portal's redirect URI with a code that redeems.
    assert fast.status_code == 302 and fast.headers["Location"].startswith(portals["social"].redirect_uri + "?")
    params = query_of(fast.headers["Location"])
    assert params["state"] == "st-123" and params["iss"] == gateway.extensions["sso"].settings.issuer
    assert fast.headers["Cache-Control"] == "no-store" and fast.headers["X-Frame-Options"] == "DENY"
    redeemed = redeem(gateway.test_client(), portals["social"], params["code"], verifier)
    assert redeemed.status_code == 200, redeemed.get_json()
    assert "id_token" in redeemed.get_json()
    # The access line names this request; the sign-in's audit row (written at the
    # redemption, from the portal's address) names the browser's address of the hop.
    rid = fast.headers["X-Request-Id"]
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == rid and r.name == "sso.access"]
    assert [(r.endpoint, r.status) for r in lines] == [("oidc.authorize", 302)]  # type: ignore[attr-defined]
    [row] = _signed_in_at("social")
    assert row.detail["browser_ip"] == ADDRESS and row.ip != ADDRESS and row.detail["sid"]


@pytest.mark.parametrize(
    "case",
    ["no cookie", "prompt=login", "lang", "unregistered redirect URI", "unknown portal", "consent needed"],
)
def test_what_the_lane_does_not_answer_is_flasks_answer_once(
    gateway: Flask, signed_in: Any, hits: list[str], case: str
) -> None:
    browser, portals = signed_in
    portal, params = portals["social"], {}
    if case == "no cookie":
        browser = Browser(gateway.test_client())
    elif case == "prompt=login":
        params = {"prompt": "login"}
    elif case == "lang":
        params = {"lang": "en"}
    elif case == "unregistered redirect URI":
        portal = Portal("social", None, "https://elsewhere.example/cb")
    elif case == "unknown portal":
        portal = Portal("nobody", None, "https://nobody.example/cb")
    else:
        portal = portals["fresh"]  # no consent remembered: the consent page
    response = browser.authorize(portal, **params)
    assert hits == ["/authorize"]  # the view ran, once
    expected = {
        "no cookie": (302, "/login?"),
        "prompt=login": (302, "/login?"),
        "lang": (302, portal.redirect_uri + "?"),
        "unregistered redirect URI": (400, None),
        "unknown portal": (400, None),
        "consent needed": (302, "/consent?"),
    }[case]
    assert response.status_code == expected[0], response.text[:300]
    if expected[1] is not None:
        assert response.headers["Location"].startswith(expected[1])
    if case == "lang":
        assert "lang=en" in response.headers.get("Set-Cookie", "")  # the hook that sets it ran
    if expected[0] == 400:
        assert "text/html" in response.headers["Content-Type"]  # the error page, never a redirect
    location = response.headers.get("Location", "")
    assert ("code" in query_of(location)) == (case == "lang")  # a code only where Flask issued one


def test_a_failure_in_the_lane_is_flasks_error_page_and_the_hop_is_not_retried(
    gateway: Flask, signed_in: Any, hits: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    browser, portals = signed_in
    store = gateway.extensions["sso"].store
    calls: list[str] = []

    def down(*args: Any, **kwargs: Any) -> Any:
        calls.append("write")
        raise StoreUnavailable("redis: connection refused")

    monkeypatch.setattr(store, "replace_and_put", down)
    monkeypatch.setattr(store, "touch_and_put", down)
    fast = browser.authorize(portals["social"])
    assert calls == ["write"] and hits == []  # one attempt, answered without the view
    slow = _through_flask(gateway, browser).authorize(portals["social"])
    assert calls == ["write"] * 2 and hits == ["/authorize"]
    assert fast.status_code == slow.status_code == 503
    assert fast.headers["Content-Type"] == slow.headers["Content-Type"] and "text/html" in fast.headers["Content-Type"]
    assert fast.data == slow.data
    assert fast.headers["Cache-Control"] == "no-store" and fast.headers["X-Request-Id"]
    monkeypatch.undo()
    # Once the store is back, the same browser hops as before.
    again = browser.authorize(portals["social"])
    assert again.status_code == 302 and "code" in query_of(again.headers["Location"])
    assert urlsplit(again.headers["Location"]).netloc == "social.example"


def test_the_request_resumed_after_login_skips_flask_and_its_code_redeems(gateway: Flask, hits: list[str]) -> None:
    from sso.connectors.local import create_account

    portal = make_portal("tax")
    create_account("bob", "correct horse battery staple", "Bob")
    consent_given = Browser(gateway.test_client())
    verifier, challenge = pkce_pair()
    page = consent_given.authorize(portal, code_challenge=challenge, code_challenge_method="S256")
    done = consent_given.login(page.headers["Location"], "bob", "correct horse battery staple")
    resume = done.headers["Location"]
    assert urlsplit(resume).path == "/authorize/resume"
    hits.clear()
    consent_page = consent_given.client.get(resume)  # not consented yet: the page, from Flask
    assert hits == ["/authorize/resume"] and consent_page.headers["Location"].startswith("/consent?")
    hits.clear()
    back = consent_given.consent(consent_page.headers["Location"])
    assert urlsplit(back.headers["Location"]).path == "/authorize/resume"
    hits.clear()
    answer = consent_given.client.get(back.headers["Location"])
    assert hits == []  # the code, without Flask
    assert answer.status_code == 302 and answer.headers["Location"].startswith(portal.redirect_uri + "?")
    code = query_of(answer.headers["Location"])["code"]
    assert redeem(gateway.test_client(), portal, code, verifier).status_code == 200
    # The interaction is used up: resuming it again is Flask's error page.
    again = consent_given.client.get(back.headers["Location"])
    assert hits == ["/authorize/resume"] and again.status_code == 400
    assert "text/html" in again.headers["Content-Type"]
