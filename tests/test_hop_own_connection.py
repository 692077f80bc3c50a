"""The SSO hop's database work on a Core connection of its own (sso.db.open_own_connection).

On PostgreSQL + psycopg the hop (GET /authorize with a gateway session) reads the
account with its consent in one autocommit statement, and when the session's record
is due its sync, the record's UPDATE rides on that statement (in a WITH).  When that
UPDATE finds no record to sync (missing, ended), the sync as before takes a
connection from the pool, not the request's ORM Session: the record's UPDATE,
existence check and INSERT run on it, in one transaction, committed once; it always
goes back to the pool, rolled back unless committed, also when something fails
half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from sso import consent, create_app
from sso import session as browser_session
from sso.bootstrap import prepare
from sso.db import db, open_own_connection, own_connection
from sso.models import SessionRecord
from tests.backends import Seen, chain_ok, pg_url, redis_url  # noqa: F401  (fixtures)
from tests.conftest import (
    Browser,
    Portal,
    code_of,
    make_portal,
    make_record_stale,
    make_settings,
    running,
    session_handle,
)

SCOPES = ["openid", "profile"]


@pytest.fixture
def gateway(tmp_path: Any, pg_url: str, redis_url: str) -> Iterator[Flask]:  # noqa: F811
    with running(make_settings(tmp_path, database_url=pg_url, redis_url=redis_url, client_cache_ttl=60)) as app:
        yield app


@pytest.fixture
def hop(gateway: Flask) -> Iterator[tuple[Browser, dict[str, Portal], Seen]]:
    from sso.connectors.local import create_account

    portals = {name: make_portal(name) for name in ("tax", "social")}
    account = create_account("alice", "correct horse battery staple", "Alice")
    consent.remember(account.id, "social", SCOPES)
    browser = Browser(gateway.test_client())
    browser.code_for(portals["tax"])
    for name in portals:  # the portals into the per-process cache, as in steady state
        assert browser.authorize(Portal(name, None, "https://elsewhere.example/cb")).status_code == 400
    db.session.commit()  # the test's own session gives its connection back
    seen = Seen()
    yield browser, portals, seen
    seen.close()


def _record() -> dict[str, Any] | None:
    """The session record's columns (read in a transaction of the test's own, ended after)."""
    db.session.expire_all()
    record = db.session.execute(db.select(SessionRecord)).scalar_one_or_none()
    found = None if record is None else {"clients": record.clients, "ended_at": record.ended_at}
    db.session.commit()
    return found


@pytest.mark.postgres
@pytest.mark.redis
def test_the_hop_runs_on_one_connection_of_its_own_given_back_after(hop: Any, gateway: Flask) -> None:
    browser, portals, seen = hop
    pool = db.engine.pool
    assert pool.checkedout() == 0
    code_of(browser.authorize(portals["social"]))
    # The record needs no sync: the one read runs by itself in autocommit (no BEGIN,
    # no ROLLBACK: one round trip), its connection back in the pool at once.
    assert seen.kinds() == ["SELECT ACCOUNTS.STATUS, ACCOUNTS.ASSURANCE,"]
    assert len(seen.connections()) == 1 and seen.commits == 0 and seen.rollbacks == 0
    assert seen.orm_begins == 0  # not through the request's ORM Session
    assert pool.checkedout() == 0
    # The record's sync, when due, in that same one statement (its UPDATE in a WITH),
    # committed by itself: no BEGIN, no COMMIT.
    make_record_stale(gateway, session_handle(browser))
    seen.reset()
    code_of(browser.authorize(portals["tax"]))
    assert seen.kinds() == ["WITH SYNCED AS"]
    assert len(seen.connections()) == 1 and seen.commits == 0 and seen.rollbacks == 0
    assert seen.orm_begins == 0 and pool.checkedout() == 0
    assert _record() == {"clients": ["tax", "social"], "ended_at": None}
    chain_ok()


@pytest.mark.postgres
@pytest.mark.redis
def test_a_failure_after_the_first_statement_rolls_back_and_gives_the_connection_back(
    hop: Any, gateway: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser, portals, seen = hop
    pool = db.engine.pool
    db.session.execute(db.delete(SessionRecord))  # the sync as before: on a connection of its own
    db.session.commit()
    make_record_stale(gateway, session_handle(browser))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(browser_session, "_update_record", broken)  # after the account + consent read
    seen.reset()
    response = browser.authorize(portals["social"])
    assert response.status_code == 500 and "code=" not in response.headers.get("Location", "")
    assert seen.commits == 0 and seen.rollbacks == 1
    assert pool.checkedout() == 0  # given back, its transaction rolled back
    assert _record() is None
    monkeypatch.undo()
    code_of(browser.authorize(portals["social"]))  # the next hop works
    assert pool.checkedout() == 0 and _record() == {"clients": ["tax", "social"], "ended_at": None}


@pytest.mark.postgres
@pytest.mark.redis
def test_a_failure_after_the_read_that_synced_gives_the_connection_back_and_issues_no_code(
    hop: Any, gateway: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser, portals, seen = hop
    store = gateway.extensions["sso"].store
    handle = session_handle(browser)
    make_record_stale(gateway, handle)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(store, "replace_and_put", broken)  # the store's write-back, with the code
    response = browser.authorize(portals["social"])
    assert response.status_code == 500 and "code=" not in response.headers.get("Location", "")
    assert db.engine.pool.checkedout() == 0
    # The record's sync was committed with the read (clients as read); the session, not
    # written back, is still due its sync, and the next hop syncs it again.
    assert _record() == {"clients": ["tax"], "ended_at": None}
    assert store.get(browser_session.KIND, handle)["clients"] == ["tax"]
    monkeypatch.undo()
    seen.reset()
    code_of(browser.authorize(portals["social"]))
    assert seen.kinds() == ["WITH SYNCED AS"] and db.engine.pool.checkedout() == 0


@pytest.mark.postgres
@pytest.mark.redis
def test_a_missing_session_record_is_inserted_in_the_hops_transaction(hop: Any, gateway: Flask) -> None:
    browser, portals, seen = hop
    db.session.execute(db.delete(SessionRecord))
    db.session.commit()
    make_record_stale(gateway, session_handle(browser))
    seen.reset()
    code_of(browser.authorize(portals["social"]))
    # The read with the sync's UPDATE (no record to update), then the sync as before, on a
    # connection of the hop's own, committed once after the store's write.
    assert seen.kinds() == [
        "WITH SYNCED AS",
        "UPDATE SESSION_RECORDS SET",
        "SELECT SESSION_RECORDS.SID FROM",
        "INSERT INTO SESSION_RECORDS",
    ]
    assert len({dbapi for _, dbapi in seen.statements[1:]}) == 1
    assert seen.commits == 1 and seen.orm_begins == 0
    assert db.engine.pool.checkedout() == 0
    assert _record() == {"clients": ["tax", "social"], "ended_at": None}


@pytest.mark.postgres
@pytest.mark.redis
def test_a_disabled_account_writes_nothing_and_gives_the_connection_back(hop: Any) -> None:
    from sso.models import Account

    browser, portals, seen = hop
    db.session.execute(db.update(Account).values(status="disabled"))
    db.session.commit()
    seen.reset()
    response = browser.authorize(portals["social"])
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    # Read by the hop's lane, which leaves the request to Flask with nothing written, then
    # by the Flask view (sso.oidc.hop); neither writes.
    assert seen.kinds() == ["SELECT ACCOUNTS.STATUS, ACCOUNTS.ASSURANCE,"] * 2 and seen.commits == 0
    assert db.engine.pool.checkedout() == 0


@pytest.mark.postgres
@pytest.mark.redis
def test_no_own_connection_while_the_session_holds_a_transaction(gateway: Flask) -> None:
    with gateway.test_request_context("/authorize"):
        db.session.execute(db.select(db.literal(1)))  # the Session's transaction begun
        assert open_own_connection() is None and own_connection() is None
        db.session.rollback()
        connection = open_own_connection()
        try:
            assert connection is not None and own_connection() is connection
            assert open_own_connection() is None  # one at a time
        finally:
            from sso.db import close_own_connection

            close_own_connection(connection)
        assert own_connection() is None and db.engine.pool.checkedout() == 0


def test_no_own_connection_on_sqlite(tmp_path: Any) -> None:
    app = create_app(make_settings(tmp_path))
    prepare(app)
    with app.app_context(), app.test_request_context("/authorize"):
        assert open_own_connection() is None
        db.session.remove()
