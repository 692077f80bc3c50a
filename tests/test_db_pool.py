"""Pooled connections are pinged only after sitting idle (sso.db.check_idle_connections)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import QueuePool

from sso import db as db_module
from tests.backends import pg_url  # noqa: F401  (fixture)


@pytest.fixture
def engine(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    engine = create_engine(f"sqlite:///{tmp_path / 'pool.sqlite3'}", poolclass=QueuePool, pool_size=1)
    db_module.check_idle_connections(engine)
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(real(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    engine.pings = pings  # type: ignore[attr-defined]
    yield engine
    engine.dispose()


def _use(engine: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT 1")).scalar_one())


def test_busy_connections_are_not_pinged_idle_ones_are(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(db_module.time, "monotonic", lambda: clock[0])
    for _ in range(5):
        _use(engine)
        clock[0] += 1
    assert engine.pings == []  # a new connection, then one reused within seconds
    clock[0] += db_module.IDLE_CHECK_SECONDS
    _use(engine)
    assert engine.pings == [1]


def test_a_dead_idle_connection_is_replaced_not_handed_out(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(db_module.time, "monotonic", lambda: clock[0])
    _use(engine)
    first = engine.pool._pool.queue[0].dbapi_connection
    clock[0] += db_module.IDLE_CHECK_SECONDS + 1

    def dead(dbapi_connection: Any) -> bool:
        if dbapi_connection is first:
            raise OSError("server closed the connection")
        return True

    monkeypatch.setattr(engine.dialect, "do_ping", dead)
    assert _use(engine) == 1  # the pool discarded the dead one and opened another
    assert engine.pool._pool.queue[0].dbapi_connection is not first


def test_a_session_that_cannot_close_does_not_become_a_500(app: Any, monkeypatch: Any) -> None:
    # The database went away after the response was made: the rollback in the app
    # context's teardown fails.  The response stands and nothing escapes the WSGI call.
    from sqlalchemy import exc
    from sqlalchemy.orm import Session

    def broken_close(self: Any) -> None:
        raise exc.OperationalError("ROLLBACK", {}, Exception("server closed the connection unexpectedly"))

    client = app.test_client()
    with monkeypatch.context() as patch:
        patch.setattr(Session, "close", broken_close)
        response = client.get("/healthz")
    assert response.status_code == 200
    # The next request gets a fresh session and works normally.
    assert client.get("/readyz").status_code == 200


@pytest.mark.postgres
def test_on_postgresql_the_connection_used_last_is_handed_out_first(tmp_path: Any, pg_url: str) -> None:  # noqa: F811
    from sso.db import db
    from tests.conftest import make_settings, running

    with running(make_settings(tmp_path, database_url=pg_url)):
        first, second = db.engine.connect(), db.engine.connect()
        ids = [c.connection.dbapi_connection for c in (first, second)]
        first.close()
        second.close()  # returned last
        again = db.engine.connect()
        try:
            assert again.connection.dbapi_connection is ids[1]  # LIFO: warm, and idle ones age out
        finally:
            again.close()


class _Settings:
    """A connection whose server reports ``autovacuum`` as given."""

    def __init__(self, dialect: str, autovacuum: str) -> None:
        self.dialect = type("Dialect", (), {"name": dialect})()
        self.autovacuum = autovacuum

    def exec_driver_sql(self, sql: str) -> Any:
        assert sql == "SELECT current_setting('autovacuum')"
        return type("Result", (), {"scalar": lambda _self: self.autovacuum})()


def test_postgresql_without_autovacuum_is_reported_at_start_up() -> None:
    assert db_module.statistics_warning(_Settings("postgresql", "off")) == db_module.AUTOVACUUM_OFF
    assert db_module.statistics_warning(_Settings("postgresql", "on")) is None
    assert db_module.statistics_warning(_Settings("sqlite", "off")) is None


@pytest.mark.postgres
def test_the_start_up_check_reads_the_real_server_setting(pg_url: str, tmp_path: Any, caplog: Any) -> None:  # noqa: F811
    from sso.bootstrap import prepare
    from tests.conftest import make_settings

    engine = create_engine(pg_url)
    with engine.connect() as conn:
        autovacuum = conn.exec_driver_sql("SHOW autovacuum").scalar()
        assert (db_module.statistics_warning(conn) is None) == (autovacuum == "on")
    engine.dispose()
    from sso import create_app

    app = create_app(make_settings(tmp_path, database_url=pg_url))
    with caplog.at_level("WARNING", logger="sso.db"):
        prepare(app)
    said = [r.getMessage() for r in caplog.records if r.name == "sso.db"]
    assert said == ([] if autovacuum == "on" else [db_module.AUTOVACUUM_OFF])
