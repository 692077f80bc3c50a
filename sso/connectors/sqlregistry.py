"""SQL access shared by the mock national registries (population, enterprise).

The population and enterprise registries live in one SQL database (SQLite file
by default, made by ``scripts/generate_registries.py``; any SQLAlchemy URL works).
Every lookup is a primary-key or index seek, so its cost does not grow with the
registry's size.  A production connector would call the national interface
instead and keep the same methods.
"""

from __future__ import annotations

import threading
from dataclasses import astuple
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from .base import RegistryUnavailable

# The generator's schema, so the connector can also seed a demo-only registry.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS people (id_number TEXT PRIMARY KEY, name TEXT NOT NULL, sex TEXT NOT NULL,"
    " birth_date TEXT NOT NULL, region_code TEXT NOT NULL, phone TEXT, address TEXT, status TEXT NOT NULL)"
    " WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS enterprises (credit_code TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " org_type TEXT NOT NULL, region_code TEXT NOT NULL, legal_rep_name TEXT NOT NULL,"
    " legal_rep_id_number TEXT NOT NULL, status TEXT NOT NULL, registered_on TEXT NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS enterprises_legal_rep ON enterprises (legal_rep_id_number)",
)

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def registry_engine(url: str) -> Engine:
    """One engine per registry URL per process (connection pools are per engine)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = create_engine(url, pool_pre_ping=True)
            _ENGINES[url] = engine
        return engine


def url_for_path(path: str) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def seed_demo_registry(url: str) -> None:
    """Create the tables (if absent) and insert the fixed demo records (if absent)."""
    from . import demo_data

    engine = registry_engine(url)
    if engine.dialect.name == "sqlite" and engine.url.database:
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as conn:
        for statement in SCHEMA:
            if engine.dialect.name != "sqlite":
                statement = statement.replace(" WITHOUT ROWID", "")  # a SQLite storage option
            conn.execute(text(statement))
        for person in demo_data.DEMO_PEOPLE:
            conn.execute(
                text("INSERT OR IGNORE INTO people VALUES (:a,:b,:c,:d,:e,:f,:g,:h)")
                if engine.dialect.name == "sqlite"
                else text("INSERT INTO people VALUES (:a,:b,:c,:d,:e,:f,:g,:h) ON CONFLICT DO NOTHING"),
                dict(zip("abcdefgh", astuple(person), strict=True)),
            )
        for ent in demo_data.DEMO_ENTERPRISES:
            conn.execute(
                text("INSERT OR IGNORE INTO enterprises VALUES (:a,:b,:c,:d,:e,:f,:g,:h)")
                if engine.dialect.name == "sqlite"
                else text("INSERT INTO enterprises VALUES (:a,:b,:c,:d,:e,:f,:g,:h) ON CONFLICT DO NOTHING"),
                dict(zip("abcdefgh", astuple(ent), strict=True)),
            )


class SqlRegistry:
    def __init__(self, connector_id: str, name: str, url: str) -> None:
        self.id = connector_id
        self.name = name
        self._url = url

    def _rows(self, sql: str, **params: Any) -> list[Any]:
        try:
            with registry_engine(self._url).connect() as conn:
                return list(conn.execute(text(sql), params))
        except OperationalError as exc:
            raise RegistryUnavailable(f"{self.name} is unavailable") from exc
        except SQLAlchemyError as exc:
            raise RegistryUnavailable(f"{self.name} failed") from exc

    @classmethod
    def from_config(cls, connector_id: str, name: str, settings: dict[str, Any], instance_path: str) -> SqlRegistry:
        url = settings.get("url") or url_for_path(str(Path(instance_path) / "registry.sqlite3"))
        if not isinstance(url, str):
            raise ValueError(f"connector {connector_id}: settings.url must be a string")
        return cls(connector_id, name, url)
