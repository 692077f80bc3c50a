"""What one SSO hop costs: SQL statements, commits and session-store writes, pinned.

A browser with a gateway session asks a pre-consented portal for a code
(GET /authorize -> 302 with a code).  On the production backends that is one SQL
statement (the account with its remembered consent) and no commit, and two Redis
round trips: the session's read, then its write-back with the code (one script:
the code only if the session is still there).  The session's durable record is
written only when its sync is due (every RECORD_SYNC seconds): on PostgreSQL in that
same one statement, committed by itself (its UPDATE in a WITH); and the sign-in is
audited when the portal redeems the code.  A regression (a write per hop, an
extra round trip) fails here rather than in a load test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from sso import consent, create_app, logout
from sso import session as browser_session
from sso.bootstrap import prepare
from sso.db import db
from sso.models import AuditEvent, SessionRecord
from tests.backends import pg_url, redis_url  # noqa: F401  (fixtures)
from tests.conftest import (
    Browser,
    IsolatedClient,
    Portal,
    code_of,
    make_record_stale,
    make_settings,
    pkce_pair,
    query_of,
    redeem,
    session_handle,
)

SCOPES = ["openid", "profile"]


class Counter:
    """SQL statements and commits on the engine; calls on the short-lived store, by kind."""

    def __init__(self, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        self.commits = 0
        self.store: list[tuple[str, str]] = []
        self.engine = db.engine
        event.listen(self.engine, "before_cursor_execute", self._sql)
        event.listen(self.engine, "commit", self._commit)
        store = app.extensions["sso"].store
        names = ("get", "put", "replace", "touch", "delete", "consume", "add", "replace_and_put", "touch_and_put")
        for name in names:
            monkeypatch.setattr(store, name, self._wrap(name, getattr(store, name)))

    def _sql(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def _commit(self, conn: Any) -> None:
        self.commits += 1

    def _wrap(self, name: str, method: Any) -> Any:
        def call(kind: str, *args: Any, **kwargs: Any) -> Any:
            self.store.append((name, kind))
            return method(kind, *args, **kwargs)

        return call

    def reset(self) -> None:
        self.statements.clear()
        self.commits = 0
        self.store.clear()

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._sql)
        event.remove(self.engine, "commit", self._commit)

    def record_updates(self) -> int:
        """Statements that UPDATE the session record (alone, or in a WITH)."""
        return sum(1 for s in self.statements if "UPDATE SESSION_RECORDS" in " ".join(s.upper().split()))

    def session_ops(self) -> list[str]:
        return [name for name, kind in self.store if kind == browser_session.KIND]


def _portal(client_id: str) -> Portal:
    from sso.clients import create_client

    reg = create_client(name=client_id, client_id=client_id, redirect_uris=[f"https://{client_id}.example/cb"])
    return Portal(client_id, reg.client_secret, f"https://{client_id}.example/cb")


def _setup(app: Flask) -> tuple[Any, Browser, dict[str, Portal]]:
    from sso.connectors.local import create_account

    app.test_client_class = IsolatedClient
    portals = {name: _portal(name) for name in ("tax", "social", "health")}
    account = create_account("alice", "correct horse battery staple", "Alice")
    consent.remember(account.id, "social", SCOPES)  # pre-consented: the hop needs no page
    browser = Browser(app.test_client())
    browser.code_for(portals["tax"])  # signs in (login + consent) at the first portal
    for name in portals:  # the portals into the per-process cache, as in steady state
        assert browser.authorize(Portal(name, None, "https://elsewhere.example/cb")).status_code == 400
    return account, browser, portals


@pytest.fixture
def prod_app(tmp_path: Any, pg_url: str, redis_url: str) -> Iterator[Flask]:  # noqa: F811
    settings = make_settings(tmp_path, database_url=pg_url, redis_url=redis_url, client_cache_ttl=60)
    app = create_app(settings)
    prepare(app)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def hop(prod_app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Browser, dict[str, Portal], Counter]]:
    _, browser, portals = _setup(prod_app)
    counter = Counter(prod_app, monkeypatch)
    yield browser, portals, counter
    counter.close()


def _record(browser: Browser) -> SessionRecord:
    db.session.expire_all()
    records = db.session.execute(db.select(SessionRecord)).scalars().all()
    assert len(records) == 1
    return records[0]


def _sign_ins(client_id: str) -> list[AuditEvent]:
    return list(
        db.session.execute(db.select(AuditEvent).filter_by(event="authorize.code_redeemed", client_id=client_id))
        .scalars()
        .all()
    )


@pytest.mark.postgres
@pytest.mark.redis
def test_a_hop_is_one_statement_no_commit_and_one_session_write(hop: Any, prod_app: Flask) -> None:
    browser, portals, counter = hop
    counter.reset()
    verifier, challenge = pkce_pair()
    response = browser.authorize(portals["social"], code_challenge=challenge, code_challenge_method="S256")
    code = code_of(response)
    assert len(counter.statements) == 1, [s.split()[:4] for s in counter.statements]
    assert counter.commits == 0 and counter.record_updates() == 0
    # No separate EXPIRE (the SET slides the expiry), and the code goes with the session's write.
    assert counter.session_ops() == ["get", "replace_and_put"]
    assert counter.store == [("get", "session"), ("replace_and_put", "session")]
    stored = prod_app.extensions["sso"].store.get(browser_session.KIND, session_handle(browser))
    assert stored["clients"] == ["tax", "social"]
    assert _record(browser).clients == []  # the record's snapshot at login: synced when due
    assert _sign_ins("social") == []  # not yet: the portal has not learnt who signed in

    # The portal redeems the code: the sign-in is audited then, with the grant it opened,
    # and single logout finds the portal through that grant.
    assert redeem(browser.client, portals["social"], code, verifier).status_code == 200
    db.session.expire_all()
    (event,) = _sign_ins("social")
    assert event.actor == _record(browser).account_id and event.detail["acr"] and event.detail["grant"]
    assert event.detail["principal"] == "natural" and event.detail["sid"] == _record(browser).sid
    # ("tax" got a code at sign-in that it never redeemed: it knows of no session to end.)
    assert logout._portals(_record(browser)) == ["social"]


@pytest.mark.postgres
@pytest.mark.redis
def test_a_stale_record_is_written_once(hop: Any, prod_app: Flask) -> None:
    browser, portals, counter = hop
    handle = session_handle(browser)
    make_record_stale(prod_app, handle)
    before = _record(browser).last_seen_at
    counter.reset()
    code_of(browser.authorize(portals["social"]))
    # The sync rides on the hop's one read: one statement that commits by itself (no
    # transaction of the engine's, no commit), where it was BEGIN, SELECT, UPDATE, COMMIT.
    assert counter.record_updates() == 1, counter.statements
    assert len(counter.statements) == 1 and counter.commits == 0
    assert counter.session_ops() == ["get", "replace_and_put"] and len(counter.store) == 2
    record = _record(browser)
    # The record's snapshot of the session's portals as read, before "social" joined
    # (single logout finds it through its grant once it redeems the code).
    assert record.clients == ["tax"] and record.last_seen_at > before
    stored = prod_app.extensions["sso"].store.get(browser_session.KIND, handle)
    assert stored["clients"] == ["tax", "social"] and stored["synced_at"] >= int(time.time()) - 5


@pytest.mark.postgres
@pytest.mark.redis
def test_a_return_to_a_known_portal_syncs_a_stale_record_in_the_same_statement(hop: Any, prod_app: Flask) -> None:
    browser, portals, counter = hop
    make_record_stale(prod_app, session_handle(browser))
    counter.reset()
    code_of(browser.authorize(portals["tax"]))  # already in the session: nothing joins
    assert counter.record_updates() == 1 and len(counter.statements) == 1 and counter.commits == 0
    assert counter.session_ops() == ["get", "replace_and_put"] and len(counter.store) == 2
    counter.reset()
    code_of(browser.authorize(portals["tax"]))  # now fresh: the expiry alone slides
    assert counter.record_updates() == 0 and len(counter.statements) == 1 and counter.commits == 0
    assert counter.session_ops() == ["get", "touch_and_put"] and len(counter.store) == 2


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("outcome", ["consent_page", "error_page", "prompt_none_error"])
def test_the_idle_timeout_slides_whatever_authorize_answers(hop: Any, prod_app: Flask, outcome: str) -> None:
    import redis

    browser, portals, counter = hop
    store = prod_app.extensions["sso"].store
    key = store._key(browser_session.KIND, session_handle(browser))
    raw = redis.Redis.from_url(prod_app.extensions["sso"].settings.redis_url)
    raw.expire(key, 30)
    counter.reset()
    if outcome == "consent_page":
        response = browser.authorize(portals["health"])  # never consented: the consent page
        assert response.status_code == 302 and response.headers["Location"].startswith("/consent")
    elif outcome == "error_page":
        response = browser.authorize(Portal("nobody", None, "https://nobody.example/cb"))
        assert response.status_code == 400
    else:
        response = browser.authorize(portals["health"], prompt="none")
        assert query_of(response.headers["Location"])["error"] == "consent_required"
    assert counter.session_ops().count("touch") + counter.session_ops().count("replace") == 1
    idle = prod_app.extensions["sso"].settings.session_idle_timeout
    assert idle - 5 <= raw.ttl(key) <= idle


def test_a_hop_on_sqlite_is_one_statement_and_two_with_a_due_sync(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded default: the same statements through the ORM Session.
    app = create_app(make_settings(tmp_path, client_cache_ttl=60))
    prepare(app)
    with app.app_context():
        _sqlite_hop(app, monkeypatch)


def _sqlite_hop(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    _, browser, portals = _setup(app)
    counter = Counter(app, monkeypatch)
    try:
        counter.reset()
        code_of(browser.authorize(portals["social"]))
        assert len(counter.statements) == 1 and counter.commits == 0, counter.statements
        assert counter.session_ops() == ["get", "replace_and_put"] and len(counter.store) == 2
        make_record_stale(app, session_handle(browser))
        counter.reset()
        code_of(browser.authorize(portals["tax"]))
        assert len(counter.statements) == 2, counter.statements
        assert counter.commits == 1 and counter.record_updates() == 1
        assert counter.session_ops() == ["get", "replace_and_put"] and len(counter.store) == 2
    finally:
        counter.close()
