"""The gateway on its production backends: PostgreSQL for durable data, Redis for short-lived state."""

from __future__ import annotations

import threading

import pytest
import redis

from sso import create_app
from sso.bootstrap import prepare
from tests.backends import pg_url, redis_url  # noqa: F401  (fixtures)
from tests.conftest import Browser, IsolatedClient, Portal, basic, make_settings, redeem

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def prod_app(tmp_path, pg_url, redis_url):  # noqa: F811
    from sso.clients import create_client
    from sso.connectors.local import create_account

    app = create_app(make_settings(tmp_path, database_url=pg_url, redis_url=redis_url))
    app.test_client_class = IsolatedClient
    prepare(app)
    with app.app_context():
        reg = create_client(
            name="Tax",
            client_id="tax",
            redirect_uris=["https://tax.example/cb"],
            post_logout_redirect_uris=["https://tax.example/"],
        )
        create_account("alice", "correct horse battery staple", "Alice")
        app.config["TEST_PORTAL"] = Portal("tax", reg.client_secret, "https://tax.example/cb")
        yield app
        from sso.db import db

        db.session.remove()
        db.engine.dispose()


def test_full_flow_on_postgres_and_redis(prod_app, redis_url):  # noqa: F811
    portal = prod_app.config["TEST_PORTAL"]
    client = prod_app.test_client()
    code, verifier = Browser(client).code_for(portal)
    tokens = redeem(client, portal, code, verifier).get_json()
    assert {"access_token", "id_token", "refresh_token"} <= set(tokens)
    # Short-lived state really lives in Redis, under hashed keys only.
    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys("sso:*")]
    assert any(k.startswith("sso:session:") for k in keys)
    assert not any(tokens["refresh_token"] in k or code in k for k in keys)
    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, headers=basic(portal)
    )
    assert refreshed.status_code == 200


def _race(app, n, request):
    results: list[int] = []
    barrier = threading.Barrier(n)

    def worker() -> None:
        c = app.test_client()
        barrier.wait()
        results.append(request(c).status_code)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(results)


def test_concurrent_code_redemption_one_winner(prod_app):
    portal = prod_app.config["TEST_PORTAL"]
    code, verifier = Browser(prod_app.test_client()).code_for(portal)
    assert _race(prod_app, 16, lambda c: redeem(c, portal, code, verifier)) == [200] + [400] * 15


def test_concurrent_refresh_one_winner(prod_app):
    portal = prod_app.config["TEST_PORTAL"]
    client = prod_app.test_client()
    code, verifier = Browser(client).code_for(portal)
    rt = redeem(client, portal, code, verifier).get_json()["refresh_token"]
    results = _race(
        prod_app,
        16,
        lambda c: c.post("/token", data={"grant_type": "refresh_token", "refresh_token": rt}, headers=basic(portal)),
    )
    assert results == [200] + [400] * 15


def test_losing_redis_state_does_not_reopen_replay(prod_app, redis_url):  # noqa: F811
    portal = prod_app.config["TEST_PORTAL"]
    client = prod_app.test_client()
    code, verifier = Browser(client).code_for(portal)
    first = redeem(client, portal, code, verifier).get_json()
    second_rt = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, headers=basic(portal)
    ).get_json()
    redis.Redis.from_url(redis_url).flushdb()  # what a Redis restart without persistence does
    replay_code = redeem(client, portal, code, verifier)
    assert replay_code.get_json()["error"] == "invalid_grant"
    replay_rt = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, headers=basic(portal)
    )
    assert replay_rt.get_json()["error"] == "invalid_grant"
    assert (
        client.post(
            "/token",
            data={"grant_type": "refresh_token", "refresh_token": second_rt["refresh_token"]},
            headers=basic(portal),
        ).get_json()["error"]
        == "invalid_grant"
    )


def test_two_instances_share_sessions(prod_app, tmp_path):
    """Sign in through one instance, get a code silently through another."""
    portal = prod_app.config["TEST_PORTAL"]
    first = prod_app.test_client()
    Browser(first).code_for(portal)
    second_app = create_app(prod_app.extensions["sso"].settings)
    second_app.test_client_class = IsolatedClient
    second = second_app.test_client()
    from sso.session import cookie_name

    with prod_app.test_request_context():
        name = cookie_name()
    second.set_cookie(name, first.get_cookie(name).value, domain="localhost")
    from tests.conftest import pkce_pair, query_of

    _, challenge = pkce_pair()
    response = Browser(second).authorize(portal, prompt="none", code_challenge=challenge, code_challenge_method="S256")
    assert "code" in query_of(response.headers["Location"])
