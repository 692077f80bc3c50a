"""PostgreSQL goes away under a running gateway, then comes back.

The gateway reaches a database of its own on the shared server through a TCP
forwarder (tests/faults/tcp_proxy.py) that the test cuts and restores, so the
outage is real for the gateway and for nobody else.

While cut: /token and /userinfo answer 503 ``temporarily_unavailable`` (JSON),
/readyz 503 naming the database; /healthz and discovery still answer.  After
the restore the same app recovers by itself (``pool_pre_ping``).

An authorization code whose redemption answered 503: ``/token`` authenticates
the client (a database read) before it consumes the code, so with the database
already unreachable the code is untouched and stays redeemable exactly once.
If the outage begins after the code was consumed, the code is spent and is
never put back (putting it back could mint a second token set after a commit
whose answer was lost): it then answers ``invalid_grant``.  Never both, and
never two token sets — the concurrent part asserts exactly that.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from sso import create_app
from sso.bootstrap import prepare
from sso.clients import create_client
from sso.connectors.local import create_account
from tests.backends import pg_proxy, pg_url  # noqa: F401 - fixtures
from tests.conftest import PASSWORD, REDIRECT, USERNAME, Browser, IsolatedClient, Portal, basic, make_settings, redeem
from tests.faults.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def gateway(tmp_path: Path, pg_url: str, pg_proxy: TcpProxy) -> Iterator[Flask]:  # noqa: F811
    proxied = make_url(pg_url).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
    # No client cache: every token request below needs the database (with the cache, a
    # portal looked up less than client_cache_ttl seconds ago is served from memory).
    app = create_app(make_settings(tmp_path, database_url=proxied, client_cache_ttl=0))
    app.test_client_class = IsolatedClient
    prepare(app)
    with app.app_context():
        create_account(USERNAME, PASSWORD, "Alice")
        yield app
        from sso.db import db

        with contextlib.suppress(OperationalError):  # this context's connection died in the cut
            db.session.remove()
        db.engine.dispose()


@pytest.fixture
def portal(gateway: Flask) -> Portal:
    reg = create_client(
        name="税务服务", client_id="tax-portal", redirect_uris=[REDIRECT],
        grant_types=["authorization_code", "refresh_token", "client_credentials"],
    )
    return Portal(reg.client.client_id, reg.client_secret)


def refresh(client: Any, portal: Portal, token: str) -> Any:
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(portal))


def client_credentials(client: Any, portal: Portal) -> Any:
    return client.post("/token", data={"grant_type": "client_credentials"}, headers=basic(portal))


def assert_503(response: Any) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert "access_token" not in response.text


def assert_invalid_grant(response: Any) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    assert response.get_json()["error"] == "invalid_grant"


def issued(response: Any, *, refresh_token: bool = True) -> dict[str, Any]:
    """A 200 token response is whole: never a half-issued token set."""
    assert response.status_code == 200, (response.status_code, response.text[:300])
    body = response.get_json()
    assert body["access_token"] and (not refresh_token or body["refresh_token"])
    return body  # type: ignore[no-any-return]


def test_requests_fail_closed_while_cut_and_recover_after(gateway: Flask, portal: Portal, pg_proxy: TcpProxy) -> None:  # noqa: F811
    client = gateway.test_client()
    browser = Browser(client)
    code, verifier = browser.code_for(portal)
    tokens = issued(redeem(client, portal, code, verifier))
    pending_code, pending_verifier = browser.code_for(portal)
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    assert client.get("/userinfo", headers=bearer).status_code == 200

    pg_proxy.cut()
    assert_503(client_credentials(client, portal))
    assert_503(refresh(client, portal, tokens["refresh_token"]))
    assert_503(client.get("/userinfo", headers=bearer))
    assert_503(redeem(client, portal, pending_code, pending_verifier))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"] == {"database": "unavailable", "store": "ok"}
    assert client.get("/healthz").status_code == 200
    assert client.get("/.well-known/openid-configuration").status_code == 200

    pg_proxy.restore()  # no restart of the app
    assert client.get("/readyz").status_code == 200
    assert client.get("/userinfo", headers=bearer).status_code == 200
    issued(client_credentials(client, portal), refresh_token=False)
    rotated = issued(refresh(client, portal, tokens["refresh_token"]))
    issued(refresh(client, portal, rotated["refresh_token"]))
    # The code whose redemption got 503 was never consumed: redeemable once, then spent.
    issued(redeem(client, portal, pending_code, pending_verifier))
    assert_invalid_grant(redeem(client, portal, pending_code, pending_verifier))


def test_requests_in_flight_during_the_cut(gateway: Flask, portal: Portal, pg_proxy: TcpProxy) -> None:  # noqa: F811
    """503 or complete, never a 500; a 503'd code or refresh token is usable once or not at all."""
    browser = Browser(gateway.test_client())
    setup = gateway.test_client()
    codes = [browser.code_for(portal) for _ in range(24)]
    chains = [issued(redeem(setup, portal, *browser.code_for(portal)))["refresh_token"] for _ in range(3)]
    codes_lock = threading.Lock()
    stop = threading.Event()
    statuses: list[int] = []
    redeemed: list[tuple[str, str]] = []  # codes that answered 200
    doubtful_codes: list[tuple[str, str]] = []  # codes that answered 503
    chain_ends: list[tuple[str, bool]] = []  # (last token, it got a 503)
    failures: list[str] = []

    def record(response: Any) -> int:
        statuses.append(response.status_code)
        if response.status_code not in (200, 503):
            failures.append(f"{response.status_code} {response.text[:200]}")
        return int(response.status_code)

    def code_worker() -> None:
        client = gateway.test_client()
        while not stop.is_set():
            with codes_lock:
                if not codes:
                    return
                code = codes.pop()
            status = record(redeem(client, portal, *code))
            (redeemed if status == 200 else doubtful_codes).append(code)
            time.sleep(0.05)

    def chain_worker(token: str) -> None:
        client = gateway.test_client()
        doubtful = False
        while not stop.is_set():
            response = refresh(client, portal, token)
            if response.status_code == 400 and doubtful:
                # Its rotation committed before the outage cut the answer: counts as used.
                assert_invalid_grant(response)
                chain_ends.append((token, True))
                return
            if record(response) == 200:
                token, doubtful = issued(response)["refresh_token"], False
            else:
                doubtful = True
                time.sleep(0.05)
        chain_ends.append((token, doubtful))

    def cc_worker() -> None:
        client = gateway.test_client()
        while not stop.is_set():
            if record(client_credentials(client, portal)) == 200:
                time.sleep(0.01)

    threads = [threading.Thread(target=code_worker) for _ in range(2)]
    threads += [threading.Thread(target=chain_worker, args=(token,)) for token in chains]
    threads.append(threading.Thread(target=cc_worker))
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.8)
        pg_proxy.cut()
        time.sleep(1.0)
        pg_proxy.restore()
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures
    assert 503 in statuses and statuses.count(200) > 0, "the cut did not land inside the burst"

    client = gateway.test_client()
    for code in redeemed:  # a code that issued tokens is spent
        assert_invalid_grant(redeem(client, portal, *code))
    for code in doubtful_codes:  # usable once, or spent: never twice
        again = redeem(client, portal, *code)
        if again.status_code == 200:
            issued(again)
            assert_invalid_grant(redeem(client, portal, *code))
        else:
            assert_invalid_grant(again)
    for token, doubtful in chain_ends:  # the last token of each chain
        again = refresh(client, portal, token)
        if again.status_code == 200 or not doubtful:
            issued(again)  # a token whose rotation was never attempted, or never committed, works once
            assert_invalid_grant(refresh(client, portal, token))
        else:
            assert_invalid_grant(again)  # its rotation committed before the answer was lost
