"""The SSO hop's statements run straight on psycopg (sso.db.driver_execute): same guarantees.

In the Session's transaction (a rollback takes them back), seen by the engine's
cursor listeners, and when PostgreSQL goes away the hop fails closed (503) like any
statement through SQLAlchemy, the dead connection is dropped, and the next hop after
the restore works on a new one.  Elsewhere (SQLite) nothing takes the driver path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from sso import audit, consent, create_app
from sso.bootstrap import prepare
from sso.clients import create_client
from sso.connectors.local import create_account
from sso.db import DriverSQL, db, driver_connection, driver_execute
from sso.models import AuditEvent
from tests.backends import pg_proxy, pg_url  # noqa: F401 - fixtures
from tests.conftest import (
    USERNAME,
    Browser,
    IsolatedClient,
    Portal,
    make_record_stale,
    make_settings,
    query_of,
    session_handle,
)
from tests.faults.tcp_proxy import TcpProxy


@pytest.fixture
def gateway(tmp_path: Path, pg_url: str, pg_proxy: TcpProxy) -> Iterator[Flask]:  # noqa: F811
    proxied = make_url(pg_url).set(host="127.0.0.1", port=pg_proxy.port).render_as_string(hide_password=False)
    app = create_app(make_settings(tmp_path, database_url=proxied, client_cache_ttl=60))
    app.test_client_class = IsolatedClient
    prepare(app)
    with app.app_context():
        yield app
        with contextlib.suppress(OperationalError):  # this context's connection died in the cut
            db.session.remove()
        db.engine.dispose()


def _portal(name: str) -> Portal:
    reg = create_client(name=name, client_id=name, redirect_uris=[f"https://{name}.example/cb"])
    return Portal(name, reg.client_secret, f"https://{name}.example/cb")


def _signed_in(app: Flask) -> tuple[Browser, Portal, Portal]:
    account = create_account(USERNAME, "correct horse battery staple", "Alice")
    first, second = _portal("tax"), _portal("social")
    consent.remember(account.id, "social", ["openid", "profile"])
    browser = Browser(app.test_client())
    browser.code_for(first)
    return browser, first, second


@pytest.mark.postgres
def test_a_hop_while_postgresql_is_cut_answers_503_and_the_next_one_after_works(
    gateway: Flask,
    pg_proxy: TcpProxy,  # noqa: F811
) -> None:
    browser, _, social = _signed_in(gateway)
    events = db.session.execute(db.select(db.func.count()).select_from(AuditEvent)).scalar_one()
    db.session.commit()
    pg_proxy.cut()
    # The pooled connection was used a moment ago, so it is not pinged: the hop's first
    # statement (on the driver) is the one that finds it dead.
    response = browser.authorize(social)
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert "temporarily_unavailable" in response.text and "code=" not in response.headers.get("Location", "")
    pg_proxy.restore()
    response = browser.authorize(social)
    assert response.status_code == 302 and "code" in query_of(response.headers["Location"])
    db.session.rollback()
    after = db.session.execute(db.select(db.func.count()).select_from(AuditEvent)).scalar_one()
    assert after == events  # a hop records nothing: the sign-in is audited when its code is redeemed


@pytest.mark.postgres
def test_driver_statements_are_in_the_sessions_transaction(gateway: Flask) -> None:
    audit.record("test.first")
    audit.record("test.rolled_back", commit=False)
    db.session.rollback()
    audit.record("test.second")
    assert [e for (e,) in db.session.execute(db.select(AuditEvent.event).order_by(AuditEvent.id))] == [
        "test.first",
        "test.second",
    ]


@pytest.mark.postgres
def test_driver_statements_are_seen_by_the_engines_cursor_listeners(gateway: Flask) -> None:
    seen: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        seen.append(("before", statement))

    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        seen.append(("after", statement))

    event.listen(db.engine, "before_cursor_execute", before)
    event.listen(db.engine, "after_cursor_execute", after)
    try:
        connection = driver_connection(db.session)
        assert connection is not None
        row = driver_execute(connection, DriverSQL("SELECT %(n)s::int + 1"), {"n": 41}).fetchone()
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
        event.remove(db.engine, "after_cursor_execute", after)
    assert row == (42,)
    assert seen == [("before", "SELECT %(n)s::int + 1"), ("after", "SELECT %(n)s::int + 1")]


@pytest.mark.postgres
def test_a_driver_error_is_sqlalchemys_and_the_transaction_rolls_back(gateway: Flask) -> None:
    connection = driver_connection(db.session)
    assert connection is not None
    with pytest.raises(DBAPIError) as raised:
        driver_execute(connection, DriverSQL("SELECT * FROM no_such_table"), {})
    assert not raised.value.connection_invalidated
    db.session.rollback()
    assert db.session.execute(db.select(db.literal(1))).scalar_one() == 1


def test_no_driver_path_on_sqlite(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    prepare(app)
    with app.app_context():
        assert driver_connection(db.session) is None
        db.session.remove()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE grants SET revoked_at = now()",
        "INSERT INTO revoked_access_tokens (jti) VALUES (%(j)s)",
        "WITH x AS (SELECT 1) UPDATE accounts SET status = 'disabled'",
        "delete from Grants",
    ],
)
def test_a_driver_statement_never_writes_what_revocation_tracking_watches(sql: str) -> None:
    # sso.revocations learns of such writes from SQLAlchemy's execution context.
    with pytest.raises(ValueError):
        DriverSQL(sql)


def test_driver_statements_may_read_those_tables() -> None:
    sql = "SELECT status FROM accounts WHERE id = %(id)s"
    assert DriverSQL(f"\n {sql} \n") == sql


@pytest.mark.postgres
def test_the_hops_statements_take_the_driver_path_and_authlib_validates_once(
    gateway: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from authlib.oauth2.rfc6749.grants import authorization_code

    browser, _, social = _signed_in(gateway)
    # The portal into the per-process cache, as in steady state (no lookup in the hop).
    assert browser.authorize(Portal("social", None, "https://elsewhere.example/cb")).status_code == 400
    contexts: list[Any] = []
    validations: list[str] = []
    original = authorization_code.validate_code_authorization_request

    def counted(grant: Any) -> Any:
        validations.append(grant.request.payload.client_id)
        return original(grant)

    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        contexts.append(context)

    monkeypatch.setattr(authorization_code, "validate_code_authorization_request", counted)
    event.listen(db.engine, "before_cursor_execute", before)
    try:
        response = browser.authorize(social)
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    assert response.status_code == 302 and "code" in query_of(response.headers["Location"])
    # The account + consent SELECT, not through SQLAlchemy's execution (no execution
    # context); when the record's sync is due, the same one statement with its UPDATE.
    assert contexts == [None]
    # get_consent_grant validated the request; create_authorization_response asked again.
    assert validations == ["social"]
    make_record_stale(gateway, session_handle(browser))
    event.listen(db.engine, "before_cursor_execute", before)
    try:
        response = browser.authorize(social)
    finally:
        event.remove(db.engine, "before_cursor_execute", before)
    assert response.status_code == 302 and contexts == [None] * 2
