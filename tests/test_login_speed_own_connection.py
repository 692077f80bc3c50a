"""The password sign-in's database work on a Core connection of its own (sso.db.open_own_connection).

On PostgreSQL + psycopg, POST /login takes one connection from the pool for the
account's read, the session's record (one INSERT statement, not an ORM object
flushed by the unit of work) and the audit row, in one transaction committed once;
a failed sign-in's audit row likewise; a rehash at new parameters commits its
UPDATE on it.  The connection always goes back to the pool, rolled back unless
committed, also when something fails half-way: then neither the record nor the
audit row is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from flask import Flask

from sso import audit, audit_chain
from sso.connectors import local
from sso.db import db
from sso.models import Account, AuditEvent, SessionRecord
from tests.backends import Seen, chain_ok, pg_url, redis_url  # noqa: F401  (fixtures)
from tests.conftest import csrf_from, make_settings, running

USERNAME, PASSWORD = "alice", "correct horse battery staple"


@pytest.fixture
def gateway(tmp_path: Any, pg_url: str, redis_url: str) -> Iterator[Flask]:  # noqa: F811
    with running(make_settings(tmp_path, database_url=pg_url, redis_url=redis_url)) as app:
        local.create_account(USERNAME, PASSWORD, "Alice")
        audit.record("test.setup")  # the chain head exists, as in steady state
        db.session.commit()
        yield app


@pytest.fixture
def seen(gateway: Flask) -> Iterator[Seen]:
    watcher = Seen()
    yield watcher
    watcher.close()


def _sign_in(app: Flask, seen: Seen, password: str = PASSWORD) -> Any:
    client = app.test_client()
    token = csrf_from(client.get("/login").text)
    seen.reset()
    return client.post("/login", data={"csrf_token": token, "username": USERNAME, "password": password})


def _count(model: Any, **where: Any) -> int:
    found = db.session.execute(db.select(db.func.count()).select_from(model).filter_by(**where)).scalar_one()
    db.session.commit()
    return int(found)


@pytest.mark.postgres
@pytest.mark.redis
def test_a_sign_in_runs_on_one_connection_of_its_own_given_back_after(gateway: Flask, seen: Seen) -> None:
    pool = db.engine.pool
    assert pool.checkedout() == 0
    response = _sign_in(gateway, seen)
    assert response.status_code == 302, response.text[:300]
    assert seen.kinds() == ["SELECT ACCOUNTS.ID, ACCOUNTS.STATUS,", "INSERT INTO SESSION_RECORDS", "WITH HEAD AS"]
    assert len(seen.connections()) == 1 and seen.commits == 1 and seen.rollbacks == 0
    assert seen.orm_begins == 0  # not through the request's ORM Session
    assert pool.checkedout() == 0
    assert _count(SessionRecord) == 1 and _count(AuditEvent, event="login", outcome="success") == 1
    chain_ok()


@pytest.mark.postgres
@pytest.mark.redis
def test_a_failed_sign_in_audits_on_the_same_connection(gateway: Flask, seen: Seen) -> None:
    response = _sign_in(gateway, seen, password="wrong")
    assert response.status_code == 401
    assert seen.kinds() == ["SELECT ACCOUNTS.ID, ACCOUNTS.STATUS,", "WITH HEAD AS"]
    assert len(seen.connections()) == 1 and seen.commits == 1 and seen.orm_begins == 0
    assert db.engine.pool.checkedout() == 0
    assert _count(SessionRecord) == 0 and _count(AuditEvent, event="login", outcome="failure") == 1
    chain_ok()


@pytest.mark.postgres
@pytest.mark.redis
def test_a_failed_audit_append_keeps_neither_record_nor_row(
    gateway: Flask, seen: Seen, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(audit_chain, "_pg_append_params", broken)
    response = _sign_in(gateway, seen)
    assert response.status_code == 500
    assert seen.commits == 0 and seen.rollbacks == 1
    assert db.engine.pool.checkedout() == 0  # given back, rolled back
    assert _count(SessionRecord) == 0 and _count(AuditEvent, event="login") == 0
    monkeypatch.undo()
    assert _sign_in(gateway, seen).status_code == 302  # the next sign-in works
    assert _count(SessionRecord) == 1 and db.engine.pool.checkedout() == 0
    chain_ok()


@pytest.mark.postgres
@pytest.mark.redis
def test_a_rehash_commits_its_update_on_the_same_connection(gateway: Flask, seen: Seen) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    db.session.execute(db.update(Account).where(Account.username == USERNAME).values(password_hash=weak))
    db.session.commit()
    response = _sign_in(gateway, seen)
    assert response.status_code == 302
    assert seen.kinds() == [
        "SELECT ACCOUNTS.ID, ACCOUNTS.STATUS,",
        "UPDATE ACCOUNTS SET",
        "INSERT INTO SESSION_RECORDS",
        "WITH HEAD AS",
    ]
    assert len(seen.connections()) == 1 and seen.commits == 2 and seen.orm_begins == 0
    assert db.engine.pool.checkedout() == 0
    stored = db.session.execute(db.select(Account.password_hash).filter_by(username=USERNAME)).scalar_one()
    db.session.commit()
    assert stored != weak and not local.PASSWORDS.check_needs_rehash(stored)
    local.PASSWORDS.verify(stored, PASSWORD)
    chain_ok()


@pytest.mark.postgres
@pytest.mark.redis
def test_another_connector_stays_on_the_session(gateway: Flask, seen: Seen, monkeypatch: pytest.MonkeyPatch) -> None:
    real = gateway.extensions["sso"].connectors.default

    class Other:
        id = "other"

        def login(self, username: str, password: str) -> Any:
            return real.login(username, password)

    monkeypatch.setattr(type(gateway.extensions["sso"].connectors), "default", property(lambda self: Other()))
    response = _sign_in(gateway, seen)
    assert response.status_code == 302
    assert seen.orm_begins >= 1 and seen.commits == 1  # the Session's transaction, as before
    assert db.engine.pool.checkedout() == 0
    assert _count(SessionRecord) == 1
