"""The SQLAlchemy handle and schema migrations (Alembic) for durable data."""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session

# Stable constraint names so Alembic migrations are portable between SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


db = SQLAlchemy(model_class=Base)

MIGRATIONS = Path(__file__).parent / "migrations"


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:  # type: ignore[no-untyped-def]
    # SQLite: enforce foreign keys, let readers run beside one writer (WAL), and wait
    # for a lock instead of failing at once when two threads write together.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


# A pooled connection that sat unused for longer than this is checked (the dialect's
# ping, SELECT 1) before it is handed out; one used more recently is trusted, so a
# busy worker does not pay a round trip per request (pgbouncer's server_check_delay,
# same idea).  A connection the database dropped in between (a restart right under
# load) fails its request with a 503 (sso.errors), and that first disconnect makes
# SQLAlchemy discard every older pooled connection: the next request reconnects.
IDLE_CHECK_SECONDS = 10.0
_CHECKED_IN = "sso_checked_in"


def check_idle_connections(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections idle in the pool, not for busy ones."""

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        last = record.info.get(_CHECKED_IN)
        if last is None or time.monotonic() - last < IDLE_CHECK_SECONDS:
            return  # just opened, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # noqa: BLE001 - any failure: this connection is gone
            # The pool discards it and hands out another (a new one if need be).
            raise exc.DisconnectionError() from error


# ---- the driver path: hot statements straight on psycopg ------------------------------
#
# A statement through the Session costs ~60 us of Python (ORM execution, compiled
# cache lookup, execution context, result wrapping) for a ~15 us round trip on the
# psycopg connection under it.  The SSO hop's few fixed statements run on that same
# connection, in the Session's transaction (committed or rolled back with it): the
# SQL text is written once, as psycopg takes it (``%(name)s`` placeholders), and
# psycopg prepares it on the server after a few uses, as it does SQLAlchemy's.
#
# What SQLAlchemy would do around a statement is kept: the engine's
# ``before_cursor_execute`` / ``after_cursor_execute`` listeners see it (with no
# execution context: counters and the revocation tracking, which ignores such
# statements, hence the rule on tracked tables below), and a driver error is
# handled by SQLAlchemy's own handler: the same exception classes (a 503 for an
# outage, sso.errors), a dead connection invalidated and the pool's older ones
# discarded.  Not kept: echo logging of these statements.  PostgreSQL + psycopg
# only; elsewhere (SQLite) callers take their SQLAlchemy statements.

# sso.revocations reads what writes to these tables revoke from SQLAlchemy's
# execution context, which a driver statement has none of: none may write them
# (reading them is fine: the refresh claim joins grants and accounts).
_WRITES_TRACKED = re.compile(
    r"\b(?:update|insert\s+into|delete\s+from|merge\s+into|truncate(?:\s+table)?|copy)\s+(?:only\s+)?"
    r"[\"\w.]*?\b(?:grants|revoked_access_tokens|accounts)\b",
    re.IGNORECASE,
)


class DriverSQL(str):
    """A statement for :func:`driver_execute`: psycopg's SQL text, checked once when built."""

    __slots__ = ()

    def __new__(cls, sql: str) -> DriverSQL:
        if _WRITES_TRACKED.search(sql):
            raise ValueError("a driver statement must not write grants, accounts or revoked_access_tokens")
        return super().__new__(cls, sql.strip())


def driver_connection(session: Session) -> Connection | None:
    """The connection the driver statements run on, when it is psycopg's, else None.

    The request's own Core connection while one is open (:func:`open_own_connection`),
    else the session's (its transaction begun).
    """
    own = own_connection()
    if own is not None:
        return own
    connection = session.connection()
    return connection if connection.dialect.driver == "psycopg" else None


# ---- a request's own Core connection ----------------------------------------------------
#
# The SSO hop's few statements (sso.oidc.authorize) need no ORM object, and the
# request's ORM Session costs ~140 us more than a Core connection for the same
# checkout, begin, commit and return.  While :func:`open_own_connection` has one
# open, every database step of the code it covers goes to it, in one transaction:
# the driver statements (driver_connection), the Core statements of the rare paths
# (:func:`unit`), and the commit or rollback (:func:`commit`, :func:`rollback`).
# PostgreSQL + psycopg only, and only when the ORM Session holds no transaction (no
# write of it can be pending there: the two would otherwise be two transactions, and
# one might wait on the other's locks).  :func:`close_own_connection` must follow,
# whatever happens: the connection goes back to the pool, rolled back unless committed.

# The request's own connection, while open: a context variable (each request runs in
# a context of its own; ~20x cheaper to read than flask.g through its proxy).
_OWN: ContextVar[Connection | None] = ContextVar("sso_own_connection", default=None)


def own_connection() -> Connection | None:
    """The request's own Core connection, while one is open."""
    return _OWN.get()


def open_own_connection() -> Connection | None:
    """A Core connection of the request's own (transaction begun), or None: stay on the Session.

    None elsewhere than psycopg, with one already open, or when the request's ORM
    Session is in a transaction (it may hold writes or locks) or holds changes not
    yet flushed.  :func:`close_own_connection` must follow, whatever happens.
    """
    engine = db.engine
    if engine.dialect.driver != "psycopg" or _OWN.get() is not None:
        return None
    if db.session.registry.has():
        session = db.session()
        if session.in_transaction() or session.new or session.dirty or session.deleted:
            return None
    connection = engine.connect()
    try:
        connection.begin()
    except BaseException:
        connection.close()
        raise
    _OWN.set(connection)
    return connection


def close_own_connection(connection: Connection | None) -> None:
    """Give the request's own connection back to the pool (rolled back unless committed)."""
    if connection is None:
        return
    if _OWN.get() is connection:
        _OWN.set(None)
    give_back(connection)


def give_back(connection: Connection) -> None:
    """Close a Core connection a request took for itself, whatever state it is in.

    Rolled back unless committed; a close that fails (a dead connection) is logged
    and the connection invalidated, so its pool slot is free at once.  The answer
    already made stands.
    """
    try:
        connection.close()
    except Exception as error:  # noqa: BLE001 - the answer stands; the connection is gone
        logging.getLogger("sso.db").warning("closing the request's connection failed: %s", error.__class__.__name__)
        # Its rollback failed (a dead connection): dropped, its pool slot freed now.
        try:
            connection.invalidate()
            connection.close()
        except Exception:  # noqa: BLE001, S110 - nothing more to do for it
            pass


def unit() -> Connection | Session:
    """Where a Core statement runs: the request's own connection while open, else the Session."""
    own = own_connection()
    return own if own is not None else db.session  # type: ignore[return-value]


def commit() -> None:
    """Commit the request's unit of work (its own connection's transaction, or the Session's)."""
    own = own_connection()
    if own is not None:
        own.commit()
    else:
        db.session.commit()


def rollback() -> None:
    """Roll back the request's unit of work (its own connection's transaction, or the Session's)."""
    own = own_connection()
    if own is not None:
        own.rollback()
    else:
        db.session.rollback()


def driver_execute(connection: Connection, sql: DriverSQL, params: dict[str, Any], *, autocommit: bool = False) -> Any:
    """Run ``sql`` on ``connection``'s psycopg connection, in its transaction; the psycopg cursor.

    ``autocommit``: the psycopg connection is put in autocommit mode first, so the
    statement commits by itself (:func:`execute_at_once`, which switches it back).
    """
    statement: str = sql
    cursor = None
    try:
        cursor = connection.connection.driver_connection.cursor()
        if autocommit:
            cursor.connection.autocommit = True
        if connection._has_events or connection.engine._has_events:
            for fn in connection.dispatch.before_cursor_execute:
                statement, params = fn(connection, cursor, statement, params, None, False)
            cursor.execute(statement, params)
            connection.dispatch.after_cursor_execute(connection, cursor, statement, params, None, False)
        else:
            cursor.execute(statement, params)
    except BaseException as error:
        # SQLAlchemy's own handling: wrapped in its exception classes, a disconnect
        # invalidates the connection (and the pool's older ones); it always raises.
        connection._handle_dbapi_exception(error, statement, params, cursor, None)
    return cursor


def execute_at_once(sql: DriverSQL, params: dict[str, Any]) -> Any:
    """Run one driver statement that commits by itself; its first row (None: no row).

    For a unit of work that is one statement (the refresh claim, sso.oidc.grants):
    on a pooled connection of its own in psycopg's autocommit mode, so psycopg sends
    no BEGIN before it and no COMMIT after it — one round trip instead of three — and
    the connection is back in the pool before the caller goes on.  (SQLAlchemy's
    AUTOCOMMIT isolation level does the same for ~15 us more: setting it, and
    resetting it when the pool takes the connection back.)  A connection never goes
    back to the pool in autocommit mode: it is switched back (no round trip) or, when
    anything fails, discarded.  PostgreSQL + psycopg only (the caller checks).
    """
    connection = db.engine.connect()
    try:
        cursor = driver_execute(connection, sql, params, autocommit=True)
        row = cursor.fetchone()
    except BaseException:
        _discard(connection)
        raise
    try:
        cursor.connection.autocommit = False
    except Exception:  # noqa: BLE001 - a lost connection: the statement's answer stands
        _discard(connection)
        return row
    connection.close()
    return row


def _discard(connection: Connection) -> None:
    """After a failure: the connection closed and discarded, never back in the pool as it is."""
    try:
        if not connection.invalidated:
            connection.invalidate()
        connection.close()
    except Exception:  # noqa: BLE001, S110 - nothing more to do for it: the original error stands
        pass


def close_sessions_quietly(app: Any) -> None:
    """End each request's session without letting a dead connection turn into a 500.

    Flask-SQLAlchemy removes the session when the app context ends, after the
    response was made; if the database went away in between, the rollback on close
    raises from the WSGI callable, and the server answers 500 in place of the
    response (a 503 for the outage, or even a 200 that did not need the database).
    This teardown runs before Flask-SQLAlchemy's (teardowns run in reverse order of
    registration), closes the session, and on failure logs it and drops the session
    (SQLAlchemy has already invalidated a disconnected connection); Flask-SQLAlchemy's
    own removal then finds nothing to do.
    """
    import logging

    log = logging.getLogger("sso.db")

    @app.teardown_appcontext
    def _remove_session(exc: BaseException | None) -> None:
        try:
            db.session.remove()
        except Exception as error:  # noqa: BLE001 - the response stands; the connection is gone
            log.warning("closing the request's database session failed: %s", error.__class__.__name__)
            db.session.registry.clear()


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision`` (``sso db upgrade``)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


AUTOVACUUM_OFF = (
    "PostgreSQL's autovacuum is off: the planner's statistics are never refreshed, so it "
    "takes growing tables for nearly empty ones and may read every grant to find one "
    "refresh token (measured: each round of logins halved the refresh rate). Turn "
    "autovacuum on (the default), or run ANALYZE after bulk changes and regularly."
)


def statistics_warning(connection: Connection) -> str | None:
    """What to tell the operator when PostgreSQL keeps no fresh statistics; None when it does."""
    if connection.dialect.name != "postgresql":
        return None
    if connection.exec_driver_sql("SELECT current_setting('autovacuum')").scalar() == "on":
        return None
    return AUTOVACUUM_OFF
