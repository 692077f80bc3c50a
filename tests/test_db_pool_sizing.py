"""The database pool is sized for the worst case a worker's threads can reach.

A request may hold two pooled connections for a moment: its session's (a portal
read from the database, say) and one of its own for a statement that commits by
itself (the refresh claim: sso.db.execute_at_once).  With SQLAlchemy's default
pool (5 + 10) and 16 threads, every thread could hold one connection and wait for
a second: nothing moved until the pool's timeout, then every request failed.
``sso serve --production`` now sizes the pool from its threads
(sso.server.pool_size_for), and a request that finds no connection in time gets a
503 ``temporarily_unavailable``, never a 500.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sso import server
from sso.config import Settings, load_settings
from sso.db import db
from sso.oidc import grants
from tests.backends import pg_url  # noqa: F401  (fixture)
from tests.conftest import Browser, Portal, basic, make_settings, redeem, running

THREADS = 6


def test_the_pool_is_sized_from_the_threads_unless_configured() -> None:
    automatic = Settings()
    assert automatic.database_pool_size == 0
    assert server.pool_size_for(automatic, 16).database_pool_size == 34
    assert server.pool_size_for(automatic, 1).database_pool_size == 4
    configured = Settings(database_pool_size=50)
    assert server.pool_size_for(configured, 16).database_pool_size == 50


def test_pool_settings_are_validated() -> None:
    from sso.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={"development": True, "database_pool_size": -1, "database_pool_timeout": 0})
    assert caught.value.problems == [
        "database_pool_timeout must be positive",
        "database_pool_size must be between 0 and 1000",
    ]


def _refresh_all_at_once(
    tmp_path: Any, pg_url: str, pool_size: int, monkeypatch: Any  # noqa: F811
) -> list[tuple[int, Any]]:
    """THREADS refreshes, each thread holding its session's connection when it asks for a second."""
    settings = make_settings(
        tmp_path, database_url=pg_url, client_cache_ttl=0, database_pool_size=pool_size, database_pool_timeout=2
    )
    with running(settings) as app:
        from sso.clients import create_client
        from sso.connectors.local import create_account

        create_account("alice", "correct horse battery staple", "Alice")
        reg = create_client(
            name="Tax",
            client_id="tax-portal",
            redirect_uris=["https://portal.example.gov.cn/callback"],
            grant_types=["authorization_code", "refresh_token"],
        )
        portal = Portal(reg.client.client_id, reg.client_secret)
        client = app.test_client()
        browser = Browser(client)
        chains = []
        for _ in range(THREADS):
            code, verifier = browser.code_for(portal)
            first = redeem(client, portal, code, verifier)
            assert first.status_code == 200, first.text
            chains.append(first.get_json()["refresh_token"])
        db.session.remove()
        engine = db.engine
        assert engine.pool.size() == pool_size
        engine.dispose()  # every thread starts from an empty pool

        # Every thread reaches the claim while holding its session's connection (the
        # portal, read from the database: client_cache_ttl 0), then asks for another.
        barrier = threading.Barrier(THREADS)
        real = grants.execute_at_once

        def all_together(sql: Any, params: Any) -> Any:
            assert db.session().get_transaction() is not None  # the session's connection is held
            try:
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                pass
            return real(sql, params)

        monkeypatch.setattr(grants, "execute_at_once", all_together)
        results: list[tuple[int, Any]] = []

        def worker(token: str) -> None:
            with app.app_context():
                response = app.test_client().post(
                    "/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(portal)
                )
                results.append((token, response.status_code, response.get_json()))

        threads = [threading.Thread(target=worker, args=(token,)) for token in chains]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        monkeypatch.setattr(grants, "execute_at_once", real)
        # Whatever was refused spent nothing: each such token refreshes now.
        for token, status, _ in results:
            if status != 200:
                again = client.post(
                    "/token", data={"grant_type": "refresh_token", "refresh_token": token}, headers=basic(portal)
                )
                assert again.status_code == 200, again.text
        return [(status, body) for _, status, body in results]


@pytest.mark.postgres
def test_a_pool_sized_for_the_threads_never_stalls(tmp_path: Any, pg_url: str, monkeypatch: Any) -> None:  # noqa: F811
    pool_size = server.pool_size_for(Settings(), THREADS).database_pool_size
    results = _refresh_all_at_once(tmp_path, pg_url, pool_size, monkeypatch)
    assert [status for status, _ in results] == [200] * THREADS
    assert len({body["refresh_token"] for _, body in results}) == THREADS


@pytest.mark.postgres
def test_a_pool_too_small_answers_503_not_500(tmp_path: Any, pg_url: str, monkeypatch: Any) -> None:  # noqa: F811
    # One connection per thread: each holds one and waits for a second.  The pool's
    # timeout ends the wait with a clear, retryable error; the connections the
    # refused requests give back let the others finish.
    results = _refresh_all_at_once(tmp_path, pg_url, THREADS, monkeypatch)
    refused = [body for status, body in results if status != 200]
    assert refused and all(status in (200, 503) for status, _ in results)
    assert {body["error"] for body in refused} == {"temporarily_unavailable"}
