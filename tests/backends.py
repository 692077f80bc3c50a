"""Real PostgreSQL and Redis for tests: skip on a bare machine, fail under CI=true."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from sso.db import db
from tests.conftest import skip_or_fail
from tests.faults.tcp_proxy import TcpProxy

PG_ADMIN = os.environ.get("SSO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("SSO_TEST_REDIS", "redis://127.0.0.1:6379")


# Redis databases the redis_url fixture may take (14: tests/e2e, 15: storage conformance).
TEST_DBS = range(2, 14)
_held: dict[str, Any] = {}  # this process's database and the lock that keeps it


def _worker_db() -> int:
    """A Redis database of this test process's own, so FLUSHDB in one never hits another.

    Not only per xdist worker: per process on this machine, so that two test runs at
    once (a developer's beside CI's, or two checkouts) do not flush each other's data
    mid-test.  Each database is taken with an exclusive lock on a file named after the
    server and the database, held until the process exits; when all are taken, the
    worker waits for its own.
    """
    if "db" in _held:
        return int(_held["db"])
    import fcntl
    import hashlib
    import tempfile

    server = hashlib.sha256(REDIS_BASE.encode()).hexdigest()[:12]
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    order = [TEST_DBS[(worker + i) % len(TEST_DBS)] for i in range(len(TEST_DBS))]

    def lock(number: int, flags: int) -> bool:
        path = os.path.join(tempfile.gettempdir(), f"sso-test-redis-{server}-{number}.lock")
        handle = open(path, "a")  # noqa: SIM115 - held open for the life of the process
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            handle.close()
            return False
        _held.update(db=number, lock=handle)
        return True

    for number in order:
        if lock(number, fcntl.LOCK_EX | fcntl.LOCK_NB):
            return number
    lock(order[0], fcntl.LOCK_EX)  # every one taken: wait for this worker's own
    return order[0]


@pytest.fixture
def pg_url() -> Iterator[str]:
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no server"
        skip_or_fail(f"PostgreSQL not reachable at {PG_ADMIN}: {exc}")
    name = "sso_test_" + secrets.token_hex(6)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the test database: a test cuts and restores it (an outage)."""
    url = make_url(pg_url)
    forwarder = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield forwarder
    finally:
        forwarder.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    url = f"{REDIS_BASE}/{_worker_db()}"
    conn = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        conn.ping()
    except redis.RedisError as exc:
        skip_or_fail(f"Redis not reachable at {url}: {exc}")
    conn.flushdb()
    try:
        yield url
    finally:
        conn.flushdb()
        conn.close()


class Seen:
    """Each statement on the app's engine with the DB-API connection it ran on; commits,
    rollbacks and ORM Session transactions.  ``close()`` stops watching."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.commits = 0
        self.rollbacks = 0
        self.orm_begins = 0  # transactions of an ORM Session (the request's, or the test's)
        self._thread = threading.get_ident()
        event.listen(db.engine, "before_cursor_execute", self._sql)
        event.listen(Session, "after_begin", self._orm_begin)
        event.listen(db.engine, "commit", self._commit)
        event.listen(db.engine, "rollback", self._rollback)

    def _sql(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append((" ".join(statement.split()[:3]).upper(), conn.connection.dbapi_connection))

    def _orm_begin(self, *args: Any) -> None:
        # Session events fire for every app in the process: only this thread's (the test
        # client's requests run in it) count, not a background thread of an earlier
        # test's app (a logout notifier polling its outbox).
        if threading.get_ident() == self._thread:
            self.orm_begins += 1

    def _commit(self, conn: Any) -> None:
        self.commits += 1

    def _rollback(self, conn: Any) -> None:
        self.rollbacks += 1

    def close(self) -> None:
        event.remove(db.engine, "before_cursor_execute", self._sql)
        event.remove(db.engine, "commit", self._commit)
        event.remove(db.engine, "rollback", self._rollback)
        event.remove(Session, "after_begin", self._orm_begin)

    def reset(self) -> None:
        self.statements.clear()
        self.commits = self.rollbacks = self.orm_begins = 0

    def connections(self) -> set[int]:
        return {id(dbapi) for _, dbapi in self.statements}

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.statements]


def chain_ok() -> None:
    """The audit chain verifies (sso.audit_chain.verify), the test's transaction ended."""
    from sso import audit_chain

    result = audit_chain.verify(db.session)
    db.session.commit()
    assert result.ok, result.to_json()


class RedisCommands:
    """Every command a RedisStore's client sends, by name (an EVALSHA as EVALSHA)."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        client = store._client
        real = client.execute_command

        def execute_command(*args: Any, **options: Any) -> Any:
            self.sent.append(str(args[0]).upper())
            return real(*args, **options)

        monkeypatch.setattr(client, "execute_command", execute_command)
