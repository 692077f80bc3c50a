"""Redis goes down under a running gateway, then comes back empty.

A private redis-server on a free port (tests/storage/test_redis_faults.py) backs
the gateway's short-lived store; SQLite holds the durable data.  While Redis is
stopped every flow that needs short-lived state answers a clear 503 — JSON
``temporarily_unavailable`` on the API, an HTML page on pages — and nothing is
issued; what needs no short-lived state (discovery, JWKS, /healthz) keeps
answering.  Restarted on the same port with its data lost, the same gateway
app works again, and replay protection still holds because it rests on the
database (redeemed codes, rotated refresh tokens), not on Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from sso import create_app
from sso.bootstrap import prepare
from sso.clients import create_client
from sso.connectors.local import create_account
from tests.conftest import (
    PASSWORD,
    REDIRECT,
    USERNAME,
    Browser,
    IsolatedClient,
    Portal,
    basic,
    csrf_from,
    make_settings,
    redeem,
)
from tests.storage.test_redis_faults import PrivateRedis, private_redis

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def gateway(tmp_path: Path, redis_server: PrivateRedis) -> Iterator[Flask]:
    app = create_app(make_settings(tmp_path, redis_url=redis_server.url))
    app.test_client_class = IsolatedClient
    prepare(app)
    with app.app_context():
        yield app
    app.extensions["sso"].store.close()


def refresh(client: Any, portal: Portal, token: str) -> Any:
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(portal))


def assert_api_503(response: Any) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert "access_token" not in response.text and "refresh_token" not in response.text


def assert_page_503(response: Any) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.mimetype == "text/html"
    assert "temporarily_unavailable" in response.text or "暂时" in response.text


def test_redis_outage_and_restart(gateway: Flask, redis_server: PrivateRedis) -> None:
    create_account(USERNAME, PASSWORD, "Alice")
    reg = create_client(
        name="税务服务", client_id="tax-portal", redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
    )
    portal = Portal(reg.client.client_id, reg.client_secret)
    client = gateway.test_client()
    browser = Browser(client)

    # Before: a code redeemed (then its refresh token rotated), a code not yet redeemed,
    # and a sign-in page waiting for its password.
    redeemed_code, verifier = browser.code_for(portal)
    first = redeem(client, portal, redeemed_code, verifier)
    assert first.status_code == 200
    rotated = first.get_json()["refresh_token"]
    second = refresh(client, portal, rotated)
    assert second.status_code == 200
    current = second.get_json()["refresh_token"]
    pending_code, pending_verifier = browser.code_for(portal)
    other = gateway.test_client()
    waiting = Browser(other).authorize(portal)
    login_url = waiting.headers["Location"]
    login_page = other.get(login_url)
    assert login_page.status_code == 200

    redis_server.stop()

    # API endpoints: JSON 503, and no token from state that cannot be read.
    assert_api_503(redeem(client, portal, pending_code, pending_verifier))
    assert_page_503(browser.authorize(portal))
    assert_page_503(client.get(login_url))
    posted = other.post(
        "/login",
        data={"csrf_token": csrf_from(login_page.text), "interaction": login_url.split("interaction=")[1],
              "username": USERNAME, "password": PASSWORD},
    )
    assert_page_503(posted)
    assert posted.headers.get("Set-Cookie", "").find("sso_session") == -1
    # What needs no short-lived state keeps working.
    assert client.get("/.well-known/openid-configuration").status_code == 200
    assert client.get("/jwks").status_code == 200
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"] == {"database": "ok", "store": "unavailable"}

    redis_server.start()  # same port, data lost: the gateway is not restarted

    assert client.get("/readyz").status_code == 200
    # The pending code lived only in Redis: gone, and nothing can be issued from it.
    lost = redeem(client, portal, pending_code, pending_verifier)
    assert lost.status_code == 400 and lost.get_json()["error"] == "invalid_grant"
    # Replays stay refused: the redeemed code and the rotated refresh token are known
    # to the database, whatever Redis forgot.
    replayed = redeem(client, portal, redeemed_code, verifier)
    assert replayed.status_code == 400 and replayed.get_json()["error"] == "invalid_grant"
    reused = refresh(client, portal, rotated)
    assert reused.status_code == 400 and reused.get_json()["error"] == "invalid_grant"
    # Reuse revoked that grant (RFC 9700 §4.14.2): its current token is dead too.
    assert refresh(client, portal, current).status_code == 400

    # Everything works again: the browser session was in Redis, so sign in anew.
    code, verifier = Browser(gateway.test_client()).code_for(portal)
    again = redeem(client, portal, code, verifier)
    assert again.status_code == 200, again.text
    assert refresh(client, portal, again.get_json()["refresh_token"]).status_code == 200
    assert client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal)).status_code == 200
