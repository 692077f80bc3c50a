"""Shared fixtures: a migrated gateway on a temporary SQLite file, portals, a signed-in user."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import flask_wtf.csrf as flask_wtf_csrf
import pytest
from flask import Flask, request_started
from flask.globals import _cv_app
from flask.testing import FlaskClient

from sso import create_app
from sso.bootstrap import prepare
from sso.clients import create_client
from sso.config import load_settings
from sso.connectors import local
from sso.connectors.local import create_account
from sso.connectors.sqlregistry import seed_demo_registry, url_for_path

ISSUER = "http://127.0.0.1:5000"
REDIRECT = "https://portal.example.gov.cn/callback"
USERNAME, PASSWORD = "alice", "correct horse battery staple"

IN_CI = os.environ.get("CI") == "true"


def skip_or_fail(reason: str) -> None:
    """Backends missing on a developer machine skip; under CI=true they fail."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def make_settings(tmp_path: Any, **overrides: Any) -> Any:
    base = {
        "issuer": ISSUER,
        "instance_path": str(tmp_path / "instance"),
        "development": True,
        "key_publish_lead": 0,
    }
    base.update(overrides)
    return load_settings(overrides=base, environ={})


class IsolatedClient(FlaskClient):
    """A test client whose every request gets its own app context, as in production.

    The ``app`` fixture keeps an app context pushed for the test body; Flask would
    otherwise reuse it for requests, sharing ``g`` (and the SQLAlchemy session)
    between requests and hiding per-request bugs such as a CSRF check skipped
    because an earlier request had passed it.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        token = _cv_app.set(None)  # type: ignore[arg-type]
        try:
            return super().open(*args, **kwargs)
        finally:
            _cv_app.reset(token)


@contextmanager
def running(settings: Any) -> Iterator[Flask]:
    """A gateway made from ``settings``, migrated and seeded, inside its app context; disposed after."""
    from sso.db import db

    application = create_app(settings)
    application.test_client_class = IsolatedClient
    prepare(application)
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


def on_both_backends(request: pytest.FixtureRequest, tmp_path: Any, **overrides: Any) -> Any:
    """Settings for the fixture param "embedded" (SQLite, in-process store) or "production"
    (PostgreSQL + Redis: tests.backends' pg_url and redis_url fixtures)."""
    if request.param == "production":
        overrides.update(database_url=request.getfixturevalue("pg_url"), redis_url=request.getfixturevalue("redis_url"))
    return make_settings(tmp_path, **overrides)


BOTH_BACKENDS = ["embedded", pytest.param("production", marks=[pytest.mark.postgres, pytest.mark.redis])]


@contextmanager
def flask_requests(application: Flask) -> Iterator[list[str]]:
    """The paths of the requests Flask's request cycle sees meanwhile (its request_started signal)."""
    seen: list[str] = []

    def _count(sender: Any, **extra: Any) -> None:
        from flask import request

        seen.append(request.path)

    request_started.connect(_count, application)
    try:
        yield seen
    finally:
        request_started.disconnect(_count, application)


def make_portal(client_id: str) -> Portal:
    """A confidential code-flow portal at https://<client_id>.example/cb."""
    reg = create_client(
        name=client_id,
        client_id=client_id,
        redirect_uris=[f"https://{client_id}.example/cb"],
        grant_types=["authorization_code", "refresh_token"],
    )
    return Portal(client_id, reg.client_secret, f"https://{client_id}.example/cb")


@pytest.fixture
def app(tmp_path: Any) -> Iterator[Flask]:
    settings = make_settings(tmp_path)
    # The mock registries hold the fixed demo people and enterprises
    # (sso.connectors.demo_data): 张三 (normal), 李四 (deceased), 王五 (cancelled), 赵敏.
    seed_demo_registry(url_for_path(str(tmp_path / "instance" / "registry.sqlite3")))
    application = create_app(settings)
    application.test_client_class = IsolatedClient
    prepare(application)
    with application.app_context():
        yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Portal:
    client_id: str
    secret: str | None
    redirect_uri: str = REDIRECT


@pytest.fixture
def portal(app: Flask) -> Portal:
    reg = create_client(
        name="税务服务 Tax portal",
        client_id="tax-portal",
        redirect_uris=[REDIRECT],
        post_logout_redirect_uris=["https://portal.example.gov.cn/bye"],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
    )
    return Portal(reg.client.client_id, reg.client_secret)


@pytest.fixture
def public_portal(app: Flask) -> Portal:
    reg = create_client(
        name="Mobile app", client_id="mobile-app", redirect_uris=["http://127.0.0.1:7000/cb"], public=True
    )
    return Portal(reg.client.client_id, None, "http://127.0.0.1:7000/cb")


@pytest.fixture
def account(app: Flask) -> Any:
    return create_account(USERNAME, PASSWORD, "Alice")


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


def code_of(response: Any) -> str:
    """The code of an authorization response that must be a redirect with one."""
    assert response.status_code == 302, response.text[:300]
    query = query_of(response.headers["Location"])
    assert "code" in query, query
    return query["code"]


def csrf_from(html: str) -> str:
    marker = 'name="csrf_token" type="hidden" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def interaction_from(location: str) -> str:
    return query_of(location)["interaction"]


class Browser:
    """Drives the gateway's pages through the Flask test client like a user would."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def authorize(self, portal: Portal, **params: str) -> Any:
        query = {
            "response_type": "code",
            "client_id": portal.client_id,
            "redirect_uri": portal.redirect_uri,
            "scope": "openid profile",
            "state": "st-123",
            "nonce": "n-456",
        }
        query.update(params)
        query = {k: v for k, v in query.items() if v is not None}
        return self.client.get("/authorize", query_string=query)

    def login(self, location: str, username: str = USERNAME, password: str = PASSWORD) -> Any:
        page = self.client.get(location)
        assert page.status_code == 200, page.text
        uid = interaction_from(location) if "interaction=" in location else ""
        return self.client.post(
            "/login",
            data={"csrf_token": csrf_from(page.text), "interaction": uid, "username": username, "password": password},
        )

    def consent(self, location: str, decision: str = "allow") -> Any:
        page = self.client.get(location)
        assert page.status_code == 200, page.text
        return self.client.post(
            "/consent",
            data={"csrf_token": csrf_from(page.text), "interaction": interaction_from(location), "decision": decision},
        )

    def follow_to_client(self, response: Any, redirect_uri: str) -> dict[str, str]:
        """Follow gateway redirects until one leaves for the portal; return its query."""
        for _ in range(10):
            assert response.status_code == 302, (response.status_code, response.text[:500])
            location = response.headers["Location"]
            if location.startswith(redirect_uri):
                return query_of(location)
            if location.startswith("/login"):
                response = self.login(location)
            elif location.startswith("/consent"):
                response = self.consent(location)
            else:
                response = self.client.get(location)
        raise AssertionError("too many redirects")

    def code_for(self, portal: Portal, **params: str) -> tuple[str, str]:
        verifier, challenge = pkce_pair()
        params.setdefault("code_challenge", challenge)
        params.setdefault("code_challenge_method", "S256")
        result = self.follow_to_client(self.authorize(portal, **params), portal.redirect_uri)
        assert "code" in result, result
        return result["code"], verifier


@pytest.fixture
def browser(client: FlaskClient) -> Browser:
    return Browser(client)


def session_handle(browser: Browser) -> str:
    """The store key of the browser's gateway session (its cookie's first half)."""
    cookie = browser.client.get_cookie("sso_session")
    assert cookie is not None
    return cookie.value.split(".")[0]


def make_record_stale(app: Flask, handle: str) -> None:
    """The session's durable record is due its sync: the next write-back UPDATEs it."""
    from sso import session as browser_session

    store = app.extensions["sso"].store
    data = store.get(browser_session.KIND, handle)
    data["synced_at"] = int(time.time()) - browser_session.RECORD_SYNC - 5
    store.put(browser_session.KIND, handle, data, 600)


def basic(portal: Portal) -> dict[str, str]:
    raw = f"{portal.client_id}:{portal.secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def redeem(client: FlaskClient, portal: Portal, code: str, verifier: str) -> Any:
    return client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": portal.redirect_uri,
            "code_verifier": verifier,
        },
        headers=basic(portal),
    )


def expected_sub(portal: Portal, account: Any) -> str:
    """The pairwise sub a portal should see for an account (computed like the server)."""
    from sso.claims import subject_for
    from sso.clients import get_client

    return subject_for(get_client(portal.client_id), account)


def form_fields(html: str, form_id: str) -> dict[str, str]:
    """The named inputs (hidden ones included) of form#form_id, as a browser would submit them."""
    from html.parser import HTMLParser

    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside = False
            self.fields: dict[str, str] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "form":
                self.inside = a.get("id") == form_id
            elif self.inside and tag == "input" and a.get("name") and a.get("type") != "submit":
                self.fields[a["name"] or ""] = a.get("value") or ""

        def handle_endtag(self, tag: str) -> None:
            if tag == "form":
                self.inside = False

    parser = Parser()
    parser.feed(html)
    return parser.fields


@pytest.fixture
def signed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every CSRF token Flask-WTF signs."""
    made: list[int] = []
    real = flask_wtf_csrf.generate_csrf

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(flask_wtf_csrf, "generate_csrf", counted)
    return made


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 verification the password connector runs (thread-safe append)."""
    calls: list[str] = []
    real = local.PASSWORDS

    class Counting:
        def verify(self, stored: str, password: str) -> bool:
            calls.append(stored)
            return real.verify(stored, password)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(local, "PASSWORDS", Counting())
    return calls
