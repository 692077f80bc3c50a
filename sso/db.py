"""The SQLAlchemy handle and schema migrations (Alembic) for durable data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event, exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

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
